// SQLite: WAL, a busy timeout, statements prepared once and reused.
#include <sqlite3.h>
#include <sys/stat.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include "worker/db.h"
#include "worker/util.h"

namespace referral::worker {
namespace {

bool transient_code(int rc) noexcept {
    switch (rc & 0xff) {
        case SQLITE_CONSTRAINT:
        case SQLITE_MISMATCH:
        case SQLITE_TOOBIG:
        case SQLITE_RANGE:
            return false;
        default:
            return true;  // BUSY, LOCKED, IOERR, FULL, CANTOPEN, READONLY, ...
    }
}

// "$1" -> "?1": one SQL text serves both backends.
std::string to_sqlite_placeholders(const char* sql) {
    std::string s(sql);
    for (auto& c : s) {
        if (c == '$') c = '?';
    }
    return s;
}

// Before any connection: no global memory statistics (a mutex taken on
// every allocation SQLite makes).
void configure_sqlite_once() {
    static const bool done = [] {
        sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
        return true;
    }();
    (void)done;
}

class SqliteDb final : public Db {
public:
    SqliteDb(const std::string& path, bool create) : path_(path) {
        configure_sqlite_once();
        if (!create) {
            struct stat st;
            if (stat(path.c_str(), &st) != 0 && errno == ENOENT) {
                throw DbError("SQLite database " + path +
                                  " does not exist: run `referralctl migrate` to create it",
                              false);
            }
        }
        int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
        int rc = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
        if (rc != SQLITE_OK) {
            std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
            sqlite3_close_v2(db_);
            db_ = nullptr;
            throw DbError("cannot open SQLite database " + path + ": " + msg, transient_code(rc));
        }
        sqlite3_extended_result_codes(db_, 1);
        sqlite3_busy_timeout(db_, 5000);
        // WAL: readers (referralctl, the application) never block the
        // worker. synchronous=FULL: the worker acknowledges a batch once it
        // is committed, so the commit must survive a power cut too (one
        // fsync of the WAL per transaction, i.e. per batch); NORMAL could
        // lose acknowledged batches. Checkpoints every ~40 MB of WAL rather
        // than 4 MB: random event ids dirty one index page per event, and
        // fewer checkpoints write each page fewer times.
        exec_script(
            "PRAGMA journal_mode=WAL;"
            "PRAGMA synchronous=FULL;"
            "PRAGMA wal_autocheckpoint=10000;"
            "PRAGMA foreign_keys=ON;"
            "PRAGMA cache_size=-65536;"
            "PRAGMA temp_store=MEMORY;");
    }

    ~SqliteDb() override {
        if (checkpointer_.joinable()) {
            {
                std::lock_guard<std::mutex> lock(m_);
                stop_ = true;
            }
            cv_.notify_all();
            checkpointer_.join();
        }
        for (auto* st : stmts_) sqlite3_finalize(st);
        sqlite3_close_v2(db_);
    }

    const char* backend() const noexcept override { return "sqlite"; }

    Rows query(int id, const char* sql, std::initializer_list<Param> params) override {
        flush_clicks_now();
        sqlite3_stmt* st = prepare(id, sql);
        bind(st, params);
        Rows rows;
        for (;;) {
            int rc = sqlite3_step(st);
            if (rc == SQLITE_ROW) {
                int n = sqlite3_column_count(st);
                Row row;
                row.reserve(static_cast<std::size_t>(n));
                for (int i = 0; i < n; i++) {
                    if (sqlite3_column_type(st, i) == SQLITE_NULL) {
                        row.emplace_back(std::nullopt);
                    } else {
                        const unsigned char* t = sqlite3_column_text(st, i);
                        row.emplace_back(std::string(reinterpret_cast<const char*>(t),
                                                     static_cast<std::size_t>(sqlite3_column_bytes(st, i))));
                    }
                }
                rows.push_back(std::move(row));
                continue;
            }
            finish(st, rc);
            return rows;
        }
    }

    void write(int id, const char* sql, std::initializer_list<Param> params, std::int64_t* rows) override {
        std::int64_t n = exec(id, sql, params);
        if (rows) *rows += n;
    }

    std::int64_t exec(int id, const char* sql, std::initializer_list<Param> params) override {
        flush_clicks_now();
        sqlite3_stmt* st = prepare(id, sql);
        bind(st, params);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        }
        finish(st, rc);
        return sqlite3_changes(db_);
    }

    void exec_script(const std::string& sql) override {
        flush_clicks_now();
        char* err = nullptr;
        int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
        if (rc != SQLITE_OK) {
            std::string msg = err ? err : sqlite3_errstr(rc);
            sqlite3_free(err);
            throw DbError("SQLite: " + msg, transient_code(rc));
        }
    }

    void begin() override {
        if (checkpointer_.joinable()) {
            // The checkpointer wants the write lock for its RESTART: let it
            // have it between two batches.
            std::unique_lock<std::mutex> lock(m_);
            cv_.wait_for(lock, std::chrono::seconds(3), [&] { return !pause_writer_; });
        }
        exec(kBegin, "BEGIN IMMEDIATE", {});
    }
    void commit() override { exec(kCommit, "COMMIT", {}); }
    void rollback() noexcept override {
        clicks_.clear();
        inserted_ = 0;  // those rows are gone again
        if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    }

    // Clicks are inserted kClickRows to a statement: one statement's start,
    // cursors and end for many rows. Any other statement writes those
    // waiting first, so the order of writes is the events' order.
    void add_click(const ClickRow& r) override {
        clicks_.push_back(r);
        if (clicks_.size() == kClickRows) flush_clicks_now();
    }

    std::int64_t flush_clicks() override {
        flush_clicks_now();
        std::int64_t n = inserted_;
        inserted_ = 0;
        return n;
    }

    std::string iso(const std::string& column) const override {
        return "strftime('%Y-%m-%dT%H:%M:%SZ', " + column + ")";
    }

    // The writer stops checkpointing (and waiting for fsync) itself: when a
    // commit leaves more than kCheckpointFrames frames (256 MB) in the WAL,
    // a thread with its own connection copies them back into the database
    // (PASSIVE: the writer goes on meanwhile), then a RESTART, for which the
    // writer pauses between two batches, lets the next transaction start
    // the WAL over (a busy writer would otherwise starve it and the WAL
    // would grow without end). Checkpointing seldom writes each page once for many
    // commits: random event ids dirty about one index page per event. The
    // WAL file keeps its size (no journal_size_limit): overwriting blocks
    // that exist is much cheaper than extending the file again (frames are
    // not block-aligned, so ext4 would zero every new block first).
    void background_checkpoints() override {
        if (checkpointer_.joinable()) return;
        sqlite3_wal_hook(db_, &SqliteDb::on_commit, this);  // replaces wal_autocheckpoint
        checkpointer_ = std::thread([this] { checkpoint_loop(); });
    }

private:
    static constexpr int kCheckpointFrames = 65536;

    static int on_commit(void* self, sqlite3*, const char*, int frames) {
        auto* me = static_cast<SqliteDb*>(self);
        if (frames >= kCheckpointFrames) {
            std::lock_guard<std::mutex> lock(me->m_);
            if (!me->wanted_) {
                me->wanted_ = true;
                me->cv_.notify_all();
            }
        }
        return SQLITE_OK;
    }

    void checkpoint_loop() {
        sqlite3* db = nullptr;
        std::int64_t no_restart_before = 0;  // after a RESTART that found a long reader
        std::unique_lock<std::mutex> lock(m_);
        while (!stop_) {
            cv_.wait(lock, [&] { return stop_ || wanted_; });
            if (stop_) break;
            lock.unlock();
            if (!db) {
                if (sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) !=
                    SQLITE_OK) {
                    sqlite3_close_v2(db);
                    db = nullptr;
                } else {
                    sqlite3_busy_timeout(db, 2000);
                    // A connection knows the database is in WAL mode only
                    // once it has read it: before, a checkpoint does nothing.
                    sqlite3_exec(db, "PRAGMA journal_mode=WAL; SELECT count(*) FROM sqlite_master;", nullptr,
                                 nullptr, nullptr);
                }
            }
            if (db) {
                int log_frames = 0, done = 0;
                int rc = sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &done);
                if (rc == SQLITE_OK && now_ms() >= no_restart_before) {
                    {
                        std::lock_guard<std::mutex> g(m_);
                        pause_writer_ = true;
                    }
                    rc = sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_RESTART, &log_frames, &done);
                    {
                        std::lock_guard<std::mutex> g(m_);
                        pause_writer_ = false;
                    }
                    cv_.notify_all();
                    // A reader kept the WAL busy: let the writer work a while.
                    if (rc == SQLITE_BUSY) no_restart_before = now_ms() + 10000;
                }
                log(LogLevel::debug, "SQLite checkpoint: rc %d, %d frames in the WAL, %d copied", rc, log_frames, done);
                if (rc != SQLITE_OK && rc != SQLITE_BUSY && rc != SQLITE_LOCKED) {
                    log(LogLevel::warn, "SQLite checkpoint failed: %s", sqlite3_errmsg(db));
                    sqlite3_close_v2(db);
                    db = nullptr;
                }
            }
            lock.lock();
            wanted_ = false;
        }
        lock.unlock();
        if (db) sqlite3_close_v2(db);
    }

    static constexpr int kBegin = 1000, kCommit = 1001, kClick = 1002, kClicks = 1003;
    static constexpr std::size_t kClickRows = 64;  // 576 parameters, far below SQLite's limit

    void flush_clicks_now() {
        if (clicks_.empty()) return;
        std::size_t done = 0;
        if (clicks_.size() == kClickRows) {
            static const std::string many = click_insert(kClickRows);
            sqlite3_stmt* st = prepare(kClicks, many.c_str());
            for (std::size_t i = 0; i < kClickRows; i++) bind_click(st, static_cast<int>(i * 9), clicks_[i]);
            step_clicks(st);
            done = kClickRows;
        }
        if (done < clicks_.size()) {
            static const std::string one = click_insert(1);
            sqlite3_stmt* st = prepare(kClick, one.c_str());
            for (; done < clicks_.size(); done++) {
                bind_click(st, 0, clicks_[done]);
                step_clicks(st);
            }
        }
        clicks_.clear();
    }

    void step_clicks(sqlite3_stmt* st) {
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE) clicks_.clear();  // the transaction fails: they go with it
        finish(st, rc);
        inserted_ += sqlite3_changes(db_);
    }

    static std::string click_insert(std::size_t rows) {
        std::string sql =
            "INSERT INTO referral_response (event_id, referral_id, action, visitor_id, ip,"
            " user_agent, target, referer, host, created_at) VALUES ";
        for (std::size_t r = 0; r < rows; r++) {
            const std::size_t b = r * 9;
            if (r > 0) sql += ", ";
            sql += "($" + std::to_string(b + 1) + ", $" + std::to_string(b + 2) + ", 'click'";
            for (std::size_t k = 3; k <= 9; k++) sql += ", $" + std::to_string(b + k);
            sql += ")";
        }
        return sql + " ON CONFLICT (event_id) DO NOTHING";
    }

    void bind_click(sqlite3_stmt* st, int base, const ClickRow& r) {
        bind_at(st, base, {Param::Text(r.event_id), Param::Int(r.referral_id), Param::OptText(r.visitor_id),
                           Param::OptText(r.ip), Param::OptText(r.user_agent), Param::OptText(r.target),
                           Param::OptText(r.referer), Param::OptText(r.host), Param::Text(r.created_at)});
    }

    sqlite3_stmt* prepare(int id, const char* sql) {
        std::size_t i = static_cast<std::size_t>(id);
        if (i >= stmts_.size()) stmts_.resize(i + 1, nullptr);
        if (stmts_[i]) return stmts_[i];
        std::string text = to_sqlite_placeholders(sql);
        sqlite3_stmt* st = nullptr;
        int rc = sqlite3_prepare_v3(db_, text.c_str(), static_cast<int>(text.size()),
                                    SQLITE_PREPARE_PERSISTENT, &st, nullptr);
        if (rc != SQLITE_OK) {
            throw DbError(std::string("SQLite: cannot prepare statement: ") + sqlite3_errmsg(db_),
                          true);
        }
        stmts_[i] = st;
        return st;
    }

    void bind(sqlite3_stmt* st, std::initializer_list<Param> params) { bind_at(st, 0, params); }

    // Binds params to parameters base+1, base+2, ...
    void bind_at(sqlite3_stmt* st, int base, std::initializer_list<Param> params) {
        int i = base + 1;
        for (const Param& p : params) {
            int rc;
            switch (p.kind) {
                case Param::text:
                    rc = sqlite3_bind_text(st, i, p.s.data(), static_cast<int>(p.s.size()), SQLITE_STATIC);
                    break;
                case Param::integer:
                    rc = sqlite3_bind_int64(st, i, p.i);
                    break;
                default:
                    rc = sqlite3_bind_null(st, i);
            }
            if (rc != SQLITE_OK) {
                sqlite3_reset(st);
                throw DbError(std::string("SQLite: cannot bind a parameter: ") + sqlite3_errmsg(db_),
                              false);
            }
            i++;
        }
    }

    void finish(sqlite3_stmt* st, int rc) {
        if (rc == SQLITE_DONE) {
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            return;
        }
        std::string msg = sqlite3_errmsg(db_);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        throw DbError("SQLite: " + msg, transient_code(rc));
    }

    std::string path_;
    sqlite3* db_ = nullptr;
    std::vector<sqlite3_stmt*> stmts_;
    std::int64_t inserted_ = 0;
    std::vector<ClickRow> clicks_;  // added, not inserted yet (views: see Db::add_click)
    std::thread checkpointer_;
    std::mutex m_;
    std::condition_variable cv_;
    bool stop_ = false;
    bool wanted_ = false;
    bool pause_writer_ = false;
};

}  // namespace

std::unique_ptr<Db> open_sqlite(const std::string& path, bool create) {
    return std::make_unique<SqliteDb>(path, create);
}

std::unique_ptr<Db> open_db(const DatabaseUrl& url, bool create) {
    if (url.kind == DbKind::sqlite) return open_sqlite(url.target, create);
    return open_postgres(url.target);
}

}  // namespace referral::worker
