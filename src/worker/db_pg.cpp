// PostgreSQL through libpq: named prepared statements, text parameters,
// clicks of a batch sent as columns in one INSERT ... SELECT FROM unnest(),
// and writes whose outcome nobody reads sent in pipeline mode: a run of
// them goes out with the next statement that needs an answer (a read, a
// COMMIT), in one round trip instead of one per statement.
#include <libpq-fe.h>

#include <cstring>
#include <optional>

#include "worker/db.h"

namespace referral::worker {
namespace {

struct ResultDeleter {
    void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

// A column of the batch's clicks travels as one text, its values joined
// by the unit separator and split by string_to_array() (an empty value is
// NULL): no quoting to write or to parse, unlike an array literal. Click
// text never holds control characters (clean_text() replaced them, ids and
// times are checked), so a stray one is only ever replaced here.
constexpr char kSeparator = '\x1f';

void column_append(std::string* col, bool first, std::string_view v) {
    if (!first) col->push_back(kSeparator);
    const std::size_t at = col->size();
    col->append(v);
    if (std::memchr(v.data(), kSeparator, v.size()) != nullptr) {
        for (std::size_t i = at; i < col->size(); i++)
            if ((*col)[i] == kSeparator) (*col)[i] = '?';
    }
}

class PgDb final : public Db {
public:
    explicit PgDb(const std::string& conninfo) {
        // These come first so that the address may override them. Nothing
        // may block for ever: TCP keepalives notice a peer gone silent (30 s
        // idle, then 3 probes 10 s apart) and tcp_user_timeout bounds data
        // left unacknowledged (60 s); the connection then fails, which is
        // retried like any connection loss.
        const char* keys[] = {"connect_timeout", "application_name", "keepalives", "keepalives_idle",
                              "keepalives_interval", "keepalives_count", "tcp_user_timeout", "dbname",
                              nullptr};
        const char* vals[] = {"10", "referral-worker", "1", "30", "10", "3", "60000", conninfo.c_str(),
                              nullptr};
        conn_ = PQconnectdbParams(keys, vals, 1);
        if (!conn_ || PQstatus(conn_) != CONNECTION_OK) {
            std::string msg = conn_ ? PQerrorMessage(conn_) : "out of memory";
            while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
            PQfinish(conn_);
            conn_ = nullptr;
            throw DbError("cannot connect to PostgreSQL: " + msg, true);
        }
        // A statement or a lock wait past 30 s fails (57014, 55P03): the
        // batch is rolled back and retried with backoff, never stuck.
        exec_script("SET TIME ZONE 'UTC'; SET client_encoding = 'UTF8'; SET client_min_messages = warning;"
                    " SET statement_timeout = '30s'; SET lock_timeout = '30s';");
        reset_clicks();
    }

    ~PgDb() override { PQfinish(conn_); }

    const char* backend() const noexcept override { return "postgresql"; }

    Rows query(int id, const char* sql, std::initializer_list<Param> params) override {
        Result res = run(id, sql, params);
        Rows rows;
        int nr = PQntuples(res.get()), nc = PQnfields(res.get());
        rows.reserve(static_cast<std::size_t>(nr));
        for (int r = 0; r < nr; r++) {
            Row row;
            row.reserve(static_cast<std::size_t>(nc));
            for (int c = 0; c < nc; c++) {
                if (PQgetisnull(res.get(), r, c)) {
                    row.emplace_back(std::nullopt);
                } else {
                    row.emplace_back(std::string(PQgetvalue(res.get(), r, c),
                                                 static_cast<std::size_t>(PQgetlength(res.get(), r, c))));
                }
            }
            rows.push_back(std::move(row));
        }
        return rows;
    }

    std::int64_t exec(int id, const char* sql, std::initializer_list<Param> params) override {
        Result res = run(id, sql, params);
        const char* n = PQcmdTuples(res.get());
        return n && *n ? std::strtoll(n, nullptr, 10) : 0;
    }

    void write(int id, const char* sql, std::initializer_list<Param> params, std::int64_t* rows) override {
        // Outside a transaction nothing may follow to carry it: at once.
        if (!in_tx_) {
            std::int64_t n = exec(id, sql, params);
            if (rows) *rows += n;
            return;
        }
        flush_clicks_now();
        send(id, sql, params, rows);
    }

    void exec_script(const std::string& sql) override {
        sync();  // PQexec is not allowed in pipeline mode
        if (broken_) throw out_of_step();
        Result res(PQexec(conn_, sql.c_str()));
        check(res.get(), "script");
    }

    // BEGIN goes out with the first statement of the transaction.
    void begin() override {
        send_plain("BEGIN");
        in_tx_ = true;
    }

    // The writes still queued, the clicks and COMMIT: one round trip.
    void commit() override {
        flush_clicks_now();
        send_plain("COMMIT");
        in_tx_ = false;
        Result res = sync_last("COMMIT");
        // COMMIT of a failed transaction reports ROLLBACK, not an error.
        if (std::strcmp(PQcmdStatus(res.get()), "COMMIT") != 0)
            throw DbError("PostgreSQL: the transaction was rolled back", true);
    }

    void rollback() noexcept override {
        // Counts of writes being rolled back are moot, and the variables
        // they point to may be gone with the stack that threw.
        for (Queued& q : queued_) q.rows = nullptr;
        try {
            sync();  // the error, if any, is the one being rolled back
        } catch (...) {
        }
        reset_clicks();
        inserted_ = 0;  // those rows are gone again
        if (conn_ && !broken_ && PQstatus(conn_) == CONNECTION_OK && PQtransactionStatus(conn_) != PQTRANS_IDLE) {
            PGresult* r = PQexec(conn_, "ROLLBACK");
            PQclear(r);
        }
        in_tx_ = false;
    }

    void add_click(const ClickRow& r) override {
        const bool first = pending_ == 0;
        column_append(&a_event_, first, r.event_id);
        column_append(&a_ref_, first, std::to_string(r.referral_id));
        column_append(&a_visitor_, first, r.visitor_id);
        column_append(&a_ip_, first, r.ip);
        column_append(&a_ua_, first, r.user_agent);
        column_append(&a_target_, first, r.target);
        column_append(&a_referer_, first, r.referer);
        column_append(&a_host_, first, r.host);
        column_append(&a_at_, first, r.created_at);
        pending_++;
    }

    std::int64_t flush_clicks() override {
        flush_clicks_now();
        sync();  // their count
        std::int64_t n = inserted_;
        inserted_ = 0;
        return n;
    }

    std::string iso(const std::string& column) const override {
        return "to_char(" + column + " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";
    }

private:
    static constexpr int kClicks = 1000;

    void reset_clicks() {
        for (std::string* a : {&a_event_, &a_ref_, &a_visitor_, &a_ip_, &a_ua_, &a_target_,
                               &a_referer_, &a_host_, &a_at_}) {
            a->clear();
        }
        pending_ = 0;
    }

    void flush_clicks_now() {
        if (pending_ == 0) return;
        // One click whose value is empty splits into no element at all;
        // unnest() pads the shorter columns with NULL, which is what an
        // empty value means.
        send(kClicks,
            "INSERT INTO referral_response (event_id, referral_id, action, visitor_id, ip,"
            " user_agent, target, referer, host, created_at)"
            " SELECT e, r::bigint, 'click', v, i, u, t, rf, h, c::timestamptz"
            " FROM unnest(string_to_array($1, E'\\x1f', ''), string_to_array($2, E'\\x1f', ''),"
            " string_to_array($3, E'\\x1f', ''), string_to_array($4, E'\\x1f', ''),"
            " string_to_array($5, E'\\x1f', ''), string_to_array($6, E'\\x1f', ''),"
            " string_to_array($7, E'\\x1f', ''), string_to_array($8, E'\\x1f', ''),"
            " string_to_array($9, E'\\x1f', '')) AS x(e, r, v, i, u, t, rf, h, c)"
            " ON CONFLICT (event_id) DO NOTHING",
            {Param::Text(a_event_), Param::Text(a_ref_), Param::Text(a_visitor_), Param::Text(a_ip_),
             Param::Text(a_ua_), Param::Text(a_target_), Param::Text(a_referer_), Param::Text(a_host_),
             Param::Text(a_at_)},
            &inserted_);
        reset_clicks();
    }

    // A statement whose result is wanted: sent after whatever is queued,
    // all in one round trip.
    Result run(int id, const char* sql, std::initializer_list<Param> params) {
        flush_clicks_now();
        send(id, sql, params, nullptr);
        return sync_last(nullptr);
    }

    // Statement `id` (prepared in the same round trip the first time) goes
    // into the pipeline; its changed-row count is added to *rows once read.
    void send(int id, const char* sql, std::initializer_list<Param> params, std::int64_t* rows) {
        if (queued_.size() >= kMaxQueued) sync();
        enter_pipeline();
        std::size_t i = static_cast<std::size_t>(id);
        if (i >= prepared_.size()) prepared_.resize(i + 1, Prepared::no);
        std::string name = "q" + std::to_string(id);
        if (prepared_[i] == Prepared::no) {
            if (!PQsendPrepare(conn_, name.c_str(), sql, static_cast<int>(params.size()), nullptr))
                throw lost("prepare");
            prepared_[i] = Prepared::sent;
            queued_.push_back(Queued{id, nullptr, "prepare " + name});
        }
        // Text parameters must be NUL-terminated for libpq, which copies
        // them into its output buffer right away.
        std::vector<std::string> storage;
        storage.reserve(params.size());
        std::vector<const char*> values;
        values.reserve(params.size());
        for (const Param& p : params) {
            switch (p.kind) {
                case Param::text:
                    storage.emplace_back(p.s);
                    values.push_back(storage.back().c_str());
                    break;
                case Param::integer:
                    storage.emplace_back(std::to_string(p.i));
                    values.push_back(storage.back().c_str());
                    break;
                default:
                    storage.emplace_back();
                    values.push_back(nullptr);
            }
        }
        if (!PQsendQueryPrepared(conn_, name.c_str(), static_cast<int>(values.size()), values.data(), nullptr,
                                 nullptr, 0))
            throw lost(name.c_str());
        queued_.push_back(Queued{-1, rows, std::move(name)});
    }

    // BEGIN or COMMIT, unnamed, into the pipeline.
    void send_plain(const char* sql) {
        if (queued_.size() >= kMaxQueued) sync();
        enter_pipeline();
        if (!PQsendQueryParams(conn_, sql, 0, nullptr, nullptr, nullptr, nullptr, 0)) throw lost(sql);
        queued_.push_back(Queued{-1, nullptr, sql});
    }

    void enter_pipeline() {
        if (broken_) throw out_of_step();
        if (PQpipelineStatus(conn_) != PQ_PIPELINE_OFF) return;
        if (!PQenterPipelineMode(conn_)) throw lost("pipeline");
    }

    // Reads every queued result, up to the sync point, and leaves pipeline
    // mode. Throws the first error; the statements after it were skipped
    // by the server (PGRES_PIPELINE_ABORTED) and the transaction is failed.
    void sync() { drain(nullptr); }

    // The same, and returns the result of the last statement sent.
    Result sync_last(const char* what) {
        Result last;
        drain(&last);
        if (!last) throw DbError(std::string("PostgreSQL: no result for ") + (what ? what : "a statement"), true);
        return last;
    }

    void drain(Result* last) {
        if (PQpipelineStatus(conn_) == PQ_PIPELINE_OFF) return;
        std::optional<DbError> failed;
        bool connection_ok = PQpipelineSync(conn_) == 1;
        if (!connection_ok) failed.emplace(lost("sync"));
        for (std::size_t k = 0; k < queued_.size() && connection_ok; k++) {
            const Queued& q = queued_[k];
            Result r(PQgetResult(conn_));
            if (!r) {  // the connection failed
                if (!failed) failed.emplace(lost(q.what.c_str()));
                connection_ok = false;
                break;
            }
            while (PGresult* more = PQgetResult(conn_)) PQclear(more);  // up to this statement's NULL
            ExecStatusType st = PQresultStatus(r.get());
            bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
            if (q.prepare_of >= 0)
                prepared_[static_cast<std::size_t>(q.prepare_of)] = ok ? Prepared::yes : Prepared::no;
            if (ok) {
                if (q.rows) {
                    const char* n = PQcmdTuples(r.get());
                    if (n && *n) *q.rows += std::strtoll(n, nullptr, 10);
                }
            } else if (st != PGRES_PIPELINE_ABORTED && !failed) {
                try {
                    check(r.get(), q.what.c_str());
                } catch (DbError& e) {
                    failed.emplace(std::move(e));
                }
            }
            if (last && k + 1 == queued_.size()) *last = std::move(r);
        }
        if (connection_ok) {
            Result s(PQgetResult(conn_));  // PGRES_PIPELINE_SYNC
            if (!s || PQresultStatus(s.get()) != PGRES_PIPELINE_SYNC) {
                connection_ok = false;
                if (!failed) failed.emplace(lost("sync"));
            }
        }
        // A statement prepared in a pipeline whose answer never came may or
        // may not exist: a lost connection is reopened, so that is moot.
        for (auto& p : prepared_)
            if (p == Prepared::sent) p = Prepared::no;
        queued_.clear();
        if (connection_ok && !PQexitPipelineMode(conn_)) {
            connection_ok = false;
            if (!failed) failed.emplace(lost("pipeline end"));
        }
        if (!connection_ok) {
            // Lost, or out of step with the server: this connection is done
            // (the caller reconnects on a transient error), whatever the
            // statement's own error was.
            broken_ = true;
            if (failed) failed->transient = true;
        }
        if (failed) {
            if (last) last->reset();
            throw *failed;
        }
    }

    static DbError out_of_step() {
        return DbError("PostgreSQL: the connection failed during a pipeline; reconnecting", true);
    }

    DbError lost(const char* what) {
        std::string msg = PQerrorMessage(conn_);
        while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
        return DbError(std::string("PostgreSQL (") + what + "): " + (msg.empty() ? "connection lost" : msg), true);
    }

    void check(PGresult* res, const char* what) {
        ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return;
        std::string msg = res ? PQresultErrorMessage(res) : PQerrorMessage(conn_);
        if (msg.empty()) msg = PQerrorMessage(conn_);
        while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
        const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
        bool transient = true;
        if (PQstatus(conn_) == CONNECTION_OK && state &&
            (std::strncmp(state, "22", 2) == 0 || std::strncmp(state, "23", 2) == 0)) {
            transient = false;  // data exception, integrity violation
        }
        throw DbError(std::string("PostgreSQL (") + what + (state ? std::string(", ") + state : "") +
                          "): " + msg,
                      transient);
    }

    // Bounds what the server may have to answer while we are still
    // sending (libpq is in blocking mode): a thousand short results fit in
    // the socket buffers, so neither side can wait on the other for ever.
    static constexpr std::size_t kMaxQueued = 1000;

    enum class Prepared : unsigned char { no, sent, yes };
    struct Queued {
        int prepare_of;      // a PQsendPrepare of this statement id, else -1
        std::int64_t* rows;  // adds the changed-row count here, if set
        std::string what;    // the statement's name, for messages
    };

    PGconn* conn_ = nullptr;
    std::vector<Prepared> prepared_;
    std::vector<Queued> queued_;  // sent, results not read yet, in order
    bool in_tx_ = false;
    bool broken_ = false;  // a pipeline ended without its sync: never used again
    std::string a_event_, a_ref_, a_visitor_, a_ip_, a_ua_, a_target_, a_referer_, a_host_, a_at_;
    std::int64_t pending_ = 0;
    std::int64_t inserted_ = 0;
};

}  // namespace

std::unique_ptr<Db> open_postgres(const std::string& conninfo) {
    return std::make_unique<PgDb>(conninfo);
}

}  // namespace referral::worker
