// The consumer loop: XREADGROUP / XAUTOCLAIM, one transaction per batch,
// dead letters, XACK; waits and retries when Redis or the database is away.
#pragma once
#include <csignal>
#include <memory>
#include <string>

#include "worker/config.h"
#include "worker/processor.h"
#include "worker/redis.h"
#include "worker/store.h"

namespace referral::worker {

struct WorkerOptions {
    Config config;
    RedisAddress redis;
    DatabaseUrl database;
    std::string consumer;
    bool once = false;
};

// Set by SIGTERM/SIGINT: finish the batch, acknowledge it, exit 0.
extern volatile std::sig_atomic_t g_stop;
void install_signal_handlers();

class Worker {
public:
    explicit Worker(WorkerOptions opts);
    // The process exit status: 0 after a stop request or a drained --once,
    // 2 when the database schema is refused at start.
    int run();

private:
    enum class Phase { pending, claim, fresh };

    bool connect_redis();       // false only when stopping
    bool ensure_group();        // false only when stopping
    bool open_store(bool at_start, int* fatal);  // false when stopping or fatal
    bool handle(const std::vector<Entry>& entries);
    bool apply(const std::vector<Event>& events, const std::vector<std::size_t>& index,
               const std::vector<Entry>& entries, std::vector<std::pair<std::size_t, std::string>>* dead,
               Counters* counters);
    bool finish(const std::vector<Entry>& entries,
                const std::vector<std::pair<std::size_t, std::string>>& dead);
    bool sleep_backoff(int* backoff_ms);  // false when stopping
    void report(bool force);

    WorkerOptions o_;
    std::string dead_stream_;
    Redis redis_;
    std::unique_ptr<Store> store_;
    Processor processor_;
    Counters total_, reported_;
    std::int64_t last_report_ms_ = 0;
};

}  // namespace referral::worker
