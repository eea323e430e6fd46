// The dashboard's files, built into referralctl by CMake (embed.cmake) from
// src/ctl/dashboard/ and the chart library npm installed there.
#pragma once
#include <cstddef>

namespace referral::ctl {

struct DashboardAsset {
    const char* name;    // as served: "index.html", or under /assets/
    const char* source;  // relative to src/ctl/dashboard/ (for --dashboard-dir)
    const unsigned char* data;
    std::size_t size;
};

extern const DashboardAsset kDashboardAssets[];
extern const std::size_t kDashboardAssetCount;

}  // namespace referral::ctl
