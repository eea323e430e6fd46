// referral-worker: drains the referral event stream into the main database.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>

#include "worker/config.h"
#include "worker/util.h"
#include "worker/worker.h"

using namespace referral::worker;

namespace {

[[noreturn]] void refuse(const std::string& msg) {
    std::fprintf(stderr, "referral-worker: %s\n", msg.c_str());
    std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"referral-worker: drains the referral event stream into the main database"};
    std::string config_file, redis, stream, group, consumer, database, claim_idle;
    int batch = 0;
    bool once = false, verbose = false;
    app.add_option("--config", config_file, "TOML configuration file");
    app.add_flag("--once", once, "drain what is in the stream (pending entries included), then exit");
    app.add_option("--redis", redis, "redis://[:password@]host:port[/db] or unix:/path");
    app.add_option("--stream", stream, "stream key (default referral:events)");
    app.add_option("--group", group, "consumer group (default referral-workers)");
    app.add_option("--consumer", consumer, "consumer name (default <host>-<pid>)");
    app.add_option("--database", database,
                   "sqlite:///path/file.db, a plain path, or postgresql://... (default from the config, "
                   "then $REFERRAL_DATABASE)");
    app.add_option("--batch", batch, "entries per batch and transaction (default 500)");
    app.add_option("--claim-idle", claim_idle,
                   "seconds an entry stays pending with a silent consumer before it is reclaimed (default 60; "
                   "0, which takes entries from live consumers too, is for tests)");
    app.add_flag("-v,--verbose", verbose, "log every batch");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        int rc = app.exit(e);
        return rc == 0 ? 0 : 2;
    }
    if (verbose) set_log_level(LogLevel::debug);

    Config c;
    try {
        if (!config_file.empty()) c = load_config(config_file);
        if (!redis.empty()) c.redis = redis;
        if (!stream.empty()) {
            validate_stream_name("--stream", stream);
            c.stream = stream;
        }
        if (!group.empty()) {
            validate_stream_name("--group", group);
            c.group = group;
        }
        if (!consumer.empty()) {
            validate_stream_name("--consumer", consumer);
            c.consumer = consumer;
        }
        if (!database.empty()) {
            c.database = database;
        } else if (!c.database_from_file) {
            const char* env = std::getenv("REFERRAL_DATABASE");
            if (env && *env) c.database = env;
        }
        if (app.count("--batch")) {
            if (batch < 1 || batch > kMaxBatch)
                throw ConfigError("--batch: bad value " + std::to_string(batch) + ": expected 1 to " +
                                  std::to_string(kMaxBatch));
            c.batch = batch;
        }
        if (!claim_idle.empty()) {
            std::int64_t ms;
            if (!parse_duration_ms(claim_idle, &ms))
                throw ConfigError("--claim-idle: bad value \"" + claim_idle + "\": expected seconds");
            c.claim_idle_ms = ms;
        }
        // Read once, here: a missing or unreadable key file stops the start.
        load_secrets(&c);
    } catch (const ConfigError& e) {
        refuse(e.what());
    }

    WorkerOptions o;
    std::string err;
    if (!parse_redis_url(c.redis, &o.redis, &err)) refuse("--redis: " + err);
    if (!parse_database_url(c.database, &o.database, &err)) refuse("--database: " + err);
    if (c.consumer.empty()) {
        char host[256] = {0};
        if (gethostname(host, sizeof(host) - 1) != 0 || !host[0]) std::snprintf(host, sizeof(host), "worker");
        c.consumer = std::string(host) + "-" + std::to_string(getpid());
        o.consumer_is_default = true;
    }
    o.consumer = c.consumer;
    o.once = once;
    o.config = std::move(c);

    install_signal_handlers();
    Worker w(std::move(o));
    return w.run();
}
