// Rank layout and groups of pp x dp.
#include <gtest/gtest.h>

#include "tpipe/error.h"
#include "tpipe/topology.h"

namespace tpipe {
namespace {

TEST(Topology, TheSeedsFigurePp2Dp2) {
  const Topology t(2, 2);
  EXPECT_EQ(t.rank(0, 0), 0);
  EXPECT_EQ(t.rank(0, 1), 1);
  EXPECT_EQ(t.rank(1, 0), 2);
  EXPECT_EQ(t.rank(1, 1), 3);
  EXPECT_EQ(t.pipeline_ranks(0), (std::vector<int>{0, 2}));
  EXPECT_EQ(t.pipeline_ranks(1), (std::vector<int>{1, 3}));
  EXPECT_EQ(t.dp_ranks(0), (std::vector<int>{0, 1}));
  EXPECT_EQ(t.dp_ranks(1), (std::vector<int>{2, 3}));
}

TEST(Topology, Pp3Dp2GroupsAndInverse) {
  const Topology t(3, 2);
  for (int r = 0; r < 6; ++r) EXPECT_EQ(t.rank(t.position_of(r), t.replica_of(r)), r);
  EXPECT_EQ(t.position_of(5), 2);
  EXPECT_EQ(t.replica_of(5), 1);
  EXPECT_EQ(t.ranks_of_positions({2, 0}), (std::vector<int>{0, 1, 4, 5}));
  EXPECT_EQ(Topology::for_world(6, 2).pp(), 3);
}

TEST(Topology, WrongWorldSaysSo) {
  try {
    Topology(4, 2).check_world(6);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "world size 6 does not match pp = 4 x dp = 2 = 8; start pp x dp ranks (tpipe run -n 8)");
  }
  EXPECT_THROW(Topology::for_world(6, 4), ConfigError);
  EXPECT_THROW(Topology(0, 1), ConfigError);
  EXPECT_THROW(Topology(2, 2).rank(2, 0), ConfigError);
}

}  // namespace
}  // namespace tpipe
