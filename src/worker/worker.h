// The consumer: a reader thread takes batches from the stream
// (XREADGROUP, XAUTOCLAIM) and parses them while the main thread applies
// the previous batch in one database transaction, sends its dead letters
// and XACKs it. Redis or the database going away makes either side wait
// and retry with backoff.
#pragma once
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

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
    bool consumer_is_default = false;  // "<host>-<pid>": forgotten on a clean exit
    bool once = false;
};

// Set by SIGTERM/SIGINT: finish the batch, acknowledge it, exit 0.
extern std::atomic<int> g_stop;  // lock-free: safe in a signal handler
void install_signal_handlers();

// One batch read from the stream, parsed, waiting to be applied.
struct Batch {
    Arena arena;  // holds the reply every view below points into
    std::vector<Entry> entries;
    std::vector<Event> events;
    std::vector<std::size_t> index;                          // events[i] is entries[index[i]]
    std::vector<std::pair<std::size_t, std::string>> dead;   // entry, reason
    std::int64_t trimmed = 0;  // entries pending whose data is gone from the stream
};

// Hands batches from the reader thread to the main thread.
class BatchQueue {
public:
    explicit BatchQueue(std::size_t capacity) : capacity_(capacity) {}
    // False when the queue was closed (the consumer is gone).
    bool push(std::unique_ptr<Batch> b);
    // nullptr once the queue is closed and empty.
    std::unique_ptr<Batch> pop();
    // The popped batch is applied and acknowledged. It is freed by the
    // next push(), on the reader's thread: thousands of strings allocated
    // there, whose freeing would otherwise cost the database thread.
    void done(std::unique_ptr<Batch> b);
    // Waits until every pushed batch is done (before a reclaim sweep, so a
    // consumer never claims its own entries in flight). False when closed.
    bool wait_idle();
    void close();

private:
    std::mutex m_;
    std::condition_variable cv_;
    std::deque<std::unique_ptr<Batch>> q_;
    std::vector<std::unique_ptr<Batch>> spent_;  // done, to be freed by push()
    std::size_t capacity_;
    int in_flight_ = 0;
    bool closed_ = false;
};

class Worker {
public:
    explicit Worker(WorkerOptions opts);
    // The process exit status: 0 after a stop request or a drained --once,
    // 2 when the database schema is refused at start.
    int run();

private:
    enum class Phase { pending, claim, fresh };

    // reader thread
    void read_loop();  // never throws
    void read_loop_inner();
    bool own_pending();  // entries pending under our name? throws RedisError
    void trim_stream();  // `retain`: XTRIM MINID where no group needs the entries; never throws
    bool connect_reader(int* backoff);
    bool ensure_group();
    std::unique_ptr<Batch> read_batch(Phase* phase);
    std::vector<std::string_view> fresh_read() const;  // XREADGROUP ... > (views into members)
    static void parse_batch(Batch* b);
    // main thread
    bool open_store(bool at_start, int* fatal);
    bool apply(Batch& b, Counters* counters);
    bool finish(const Batch& b);
    bool sleep_backoff(int* backoff_ms);  // false when stopping
    void report(bool force);
    void forget_consumer();

    WorkerOptions o_;
    std::string dead_stream_;
    Redis reader_;  // XREADGROUP / XAUTOCLAIM, replies in arenas
    Redis acker_;   // dead letters, XACK
    std::unique_ptr<Store> store_;
    Processor processor_;
    BatchQueue queue_;
    Counters total_, reported_;
    std::int64_t last_report_ms_ = 0;
    // reader state
    std::string pending_after_ = "0";
    std::string claim_cursor_ = "0-0";
    std::int64_t next_claim_ms_ = 0;
    bool group_ready_ = false;
    std::int64_t next_trim_ms_ = 0;
    int reader_connections_ = 0;
    bool reconnected_ = false;  // read our pending list again (a reply may have been lost)
    // The next fresh XREADGROUP went out before this batch was parsed, so
    // that Redis builds its reply meanwhile; its reply is read first.
    bool prefetched_ = false;
    std::string count_arg_, block_arg_;
    std::atomic<bool> reader_failed_{false};
};

}  // namespace referral::worker
