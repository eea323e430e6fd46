// `referralctl serve` (SPEC "HTTP API and dashboard"): the JSON API for
// applications, /metrics for Prometheus and the growth dashboard at /.
#pragma once
#include <string>

#include "worker/config.h"

namespace referral::ctl {

struct ServeOptions {
    std::string listen = "127.0.0.1:8082";
    std::string token_file;
    std::string dashboard_dir;  // empty: the files built into the program
};

// Runs until SIGTERM or SIGINT; returns the exit status (0 after a signal,
// 1 when it cannot start).
int serve(const ServeOptions& options, const worker::Config& config, const worker::DatabaseUrl& database);

}  // namespace referral::ctl
