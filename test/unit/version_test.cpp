#include "core/version.hpp"

#include <gtest/gtest.h>

using evproc::core::CompareVersions;
using evproc::core::FitOf;
using evproc::core::kLibraryVersion;
using evproc::core::kOldestServedVersion;
using evproc::core::VersionFit;

TEST(Version, ComparesNumbersNotText) {
  int order = 2;
  ASSERT_TRUE(CompareVersions("0.10.0", "0.9.0", &order));
  EXPECT_EQ(order, 1);
  ASSERT_TRUE(CompareVersions("1.2.3", "1.2.3", &order));
  EXPECT_EQ(order, 0);
  ASSERT_TRUE(CompareVersions("0.1.9", "0.2.0", &order));
  EXPECT_EQ(order, -1);
}

TEST(Version, RefusesWhatIsNotMajorMinorPatch) {
  int order = 0;
  for (const char *bad : {"", "1", "1.2", "1.2.3.4", "1..2", ".1.2", "1.2.", "1.2.x", "v1.2.3",
                          "-1.2.3", "1.2.99999999999", "1.2.3 "}) {
    EXPECT_FALSE(CompareVersions(bad, "0.1.0", &order)) << bad;
  }
}

TEST(Version, ServesItsOwnAndThePreviousVersion) {
  EXPECT_EQ(FitOf(kLibraryVersion), VersionFit::kServed);
  EXPECT_EQ(FitOf(kOldestServedVersion), VersionFit::kServed);
  EXPECT_EQ(FitOf("0.0.9"), VersionFit::kOlder);
  EXPECT_EQ(FitOf("9.9.9"), VersionFit::kNewer);
  EXPECT_EQ(FitOf("0.3.1"), VersionFit::kNewer);
  EXPECT_EQ(FitOf("unpackaged"), VersionFit::kUnknown);
}
