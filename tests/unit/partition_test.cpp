// Uniform and explicit partitions.
#include <gtest/gtest.h>

#include "tpipe/error.h"
#include "tpipe/partition.h"

namespace tpipe {
namespace {

TEST(Partition, UniformPutsTheRemainderFirst) {
  EXPECT_EQ(to_string(partition_uniform(8, 3)), "3,3,2");
  EXPECT_EQ(to_string(partition_uniform(8, 4)), "2,2,2,2");
  EXPECT_EQ(to_string(partition_uniform(5, 1)), "5");
  EXPECT_EQ(partition_uniform(8, 3).bounds, (std::vector<int>{0, 3, 6, 8}));
  EXPECT_EQ(partition_uniform(8, 3).stage_of(5), 1);
  EXPECT_EQ(partition_uniform(8, 3).stage_of(6), 2);
}

TEST(Partition, ExplicitAndFromString) {
  EXPECT_EQ(partition_from_string("1,4,3", 8, 3).bounds, (std::vector<int>{0, 1, 5, 8}));
  EXPECT_EQ(partition_from_string("uniform", 7, 2).bounds, (std::vector<int>{0, 4, 7}));
}

TEST(Partition, BadInputSaysWhat) {
  auto msg = [](auto f) {
    try {
      f();
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(msg([] { partition_uniform(2, 3); }),
            "cannot cut 2 layers into 3 stages: every stage needs at least one layer");
  EXPECT_EQ(msg([] { partition_from_string("3,3", 8, 2); }), "partition 3,3 covers 6 layers, but the model has 8");
  EXPECT_EQ(msg([] { partition_from_string("3,0,5", 8, 3); }),
            "stage 1 of the partition has 0 layers; every stage needs at least one");
  EXPECT_EQ(msg([] { partition_from_string("3,5", 8, 3); }), "partition '3,5' has 2 stages, but 3 were asked for");
  EXPECT_EQ(msg([] { partition_from_string("3,x", 8, 2); }),
            "partition '3,x': expected 'uniform' or layer counts such as 3,3,2");
  EXPECT_THROW(partition_uniform(8, 3).stage_of(8), ConfigError);
}

}  // namespace
}  // namespace tpipe
