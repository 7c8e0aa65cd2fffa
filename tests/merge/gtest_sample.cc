// A GoogleTest program for the merge end-to-end tests: its --gtest_output=xml has every shape that matters
// (passes, a test with two failed assertions, a disabled test, a skip, value-parameterised tests, and a message
// with bytes that are not UTF-8, which GoogleTest passes through unescaped). It fails on purpose; ctest never
// runs it directly.
#include "gtest/gtest.h"

TEST(Math, Adds) { EXPECT_EQ(2, 1 + 1); }
TEST(Math, TwoFailures) {
  EXPECT_EQ(1, 2) << "first";
  EXPECT_EQ(3, 4) << "second";
}
TEST(Math, DISABLED_Off) {}
TEST(Math, Skips) { GTEST_SKIP() << "not today"; }
TEST(Text, BadBytes) { ADD_FAILURE() << "bad bytes \xff\xfe and a control \x01 character"; }
TEST(Text, Ok) {}

class Parity : public ::testing::TestWithParam<int> {};
TEST_P(Parity, Even) { EXPECT_EQ(GetParam() % 2, 0); }
INSTANTIATE_TEST_SUITE_P(Nums, Parity, ::testing::Values(2, 3, 4, 6));
