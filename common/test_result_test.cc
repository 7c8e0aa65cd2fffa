#include "common/test_result.h"

#include <string>

#include "gtest/gtest.h"

namespace testshard {
namespace {

struct Names {
  std::string classname, name;
};
Names Mangle(std::string_view id) {
  Names n;
  PytestJunitNames(id, &n.classname, &n.name);
  return n;
}

TEST(PytestJunitNamesTest, ModuleFunction) {
  Names n = Mangle("tests/unit/test_a.py::test_x");
  EXPECT_EQ(n.classname, "tests.unit.test_a");
  EXPECT_EQ(n.name, "test_x");
}

TEST(PytestJunitNamesTest, ClassMethodWithParamsContainingSeparators) {
  Names n = Mangle("tests/test_a.py::TestK::test_x[a/b::c d]");
  EXPECT_EQ(n.classname, "tests.test_a.TestK");
  EXPECT_EQ(n.name, "test_x[a/b::c d]");
}

TEST(PytestJunitNamesTest, FileOnly) {
  Names n = Mangle("test_mod.py");
  EXPECT_EQ(n.classname, "");
  EXPECT_EQ(n.name, "test_mod");
}

}  // namespace
}  // namespace testshard
