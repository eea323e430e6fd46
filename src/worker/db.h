// A thin layer over SQLite and libpq: prepared statements only, values
// always bound as parameters. SQL is written once with $1, $2, ...
// placeholders (rewritten to ?1, ?2 for SQLite).
#pragma once
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "worker/config.h"

namespace referral::worker {

// A database failure. `transient` ones (connection lost, locked, disk
// full, deadlock, ...) are retried with backoff; the others (a constraint
// or data error) will fail again however often they are tried.
struct DbError : std::runtime_error {
    DbError(const std::string& m, bool t) : std::runtime_error(m), transient(t) {}
    bool transient;
};

struct Param {
    enum Kind { null, text, integer } kind = null;
    std::string_view s;
    std::int64_t i = 0;

    static Param Null() { return Param{}; }
    static Param Text(std::string_view v) {
        Param p;
        p.kind = text;
        p.s = v;
        return p;
    }
    // Empty text becomes NULL.
    static Param OptText(std::string_view v) { return v.empty() ? Null() : Text(v); }
    static Param Int(std::int64_t v) {
        Param p;
        p.kind = integer;
        p.i = v;
        return p;
    }
};

using Row = std::vector<std::optional<std::string>>;
using Rows = std::vector<Row>;

// A column as an integer (NULL: 0) or as text (NULL: empty).
inline std::int64_t to_int(const std::optional<std::string>& s) {
    return s ? std::strtoll(s->c_str(), nullptr, 10) : 0;
}
inline std::string str(const std::optional<std::string>& s) { return s ? *s : std::string(); }

// One click response, the hot path: kept as views until the batch is
// flushed, so the caller keeps the strings alive until flush_clicks().
struct ClickRow {
    std::string_view event_id;
    std::int64_t referral_id;
    std::string_view visitor_id, ip, user_agent, target, referer, host;
    std::string_view created_at;
};

class Db {
public:
    virtual ~Db() = default;
    virtual const char* backend() const noexcept = 0;  // "sqlite" or "postgresql"

    // Runs statement `id` (prepared on first use from `sql`, then reused).
    // Returns the rows of a query (columns as text, NULL as nullopt).
    virtual Rows query(int id, const char* sql, std::initializer_list<Param> params) = 0;
    // Runs statement `id`; returns the number of rows changed.
    virtual std::int64_t exec(int id, const char* sql, std::initializer_list<Param> params) = 0;
    // Runs statement `id`, a write whose outcome the caller does not wait
    // for. PostgreSQL sends it in pipeline mode, with the next statement
    // that needs an answer (or COMMIT); an error it causes is thrown there.
    // `rows`, if set, gets the number of rows it changed added to it by the
    // time that next statement returns (SQLite: at once).
    virtual void write(int id, const char* sql, std::initializer_list<Param> params, std::int64_t* rows) = 0;
    void write(int id, const char* sql, std::initializer_list<Param> params) { write(id, sql, params, nullptr); }
    // Runs constant SQL (DDL) with no parameters.
    virtual void exec_script(const std::string& sql) = 0;

    // BEGIN (SQLite: IMMEDIATE, the write lock up front), COMMIT, ROLLBACK.
    virtual void begin() = 0;
    virtual void commit() = 0;
    virtual void rollback() noexcept = 0;

    // Inserts a click response unless its event id exists. Deferred: many
    // go in one statement (SQLite: 64; PostgreSQL: the batch), written
    // before any other statement; flush_clicks() writes what waits and
    // returns how many rows were new since the last flush.
    virtual void add_click(const ClickRow& row) = 0;
    virtual std::int64_t flush_clicks() = 0;

    // SQL for a timestamp column rendered as ISO 8601 UTC text
    // ("2026-01-02T03:04:05Z").
    virtual std::string iso(const std::string& column) const = 0;

    // A long-running writer (the worker) asks for this: SQLite then
    // checkpoints its WAL from a thread of its own, off the write path.
    virtual void background_checkpoints() {}
};

// Opens the database. `create`: SQLite may create a missing file (migrate).
std::unique_ptr<Db> open_db(const DatabaseUrl& url, bool create);
std::unique_ptr<Db> open_sqlite(const std::string& path, bool create);
std::unique_ptr<Db> open_postgres(const std::string& conninfo);

}  // namespace referral::worker
