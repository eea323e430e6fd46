// PostgreSQL through libpq: named prepared statements, text parameters,
// clicks of a batch sent as arrays in one INSERT ... SELECT FROM unnest().
#include <libpq-fe.h>

#include <cstring>

#include "worker/db.h"

namespace referral::worker {
namespace {

struct ResultDeleter {
    void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

// Appends one element of a PostgreSQL array literal.
void array_append(std::string* a, std::string_view v, bool null_if_empty) {
    if (a->size() > 1) a->push_back(',');
    if (v.empty() && null_if_empty) {
        a->append("NULL");
        return;
    }
    a->push_back('"');
    for (char c : v) {
        if (c == '"' || c == '\\') a->push_back('\\');
        a->push_back(c);
    }
    a->push_back('"');
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

    void exec_script(const std::string& sql) override {
        Result res(PQexec(conn_, sql.c_str()));
        check(res.get(), "script");
    }

    void begin() override {
        exec_script("BEGIN");
        in_tx_ = true;
    }

    void commit() override {
        flush_clicks_now();
        Result res(PQexec(conn_, "COMMIT"));
        check(res.get(), "COMMIT");
        in_tx_ = false;
        // COMMIT of a failed transaction reports ROLLBACK, not an error.
        if (std::strcmp(PQcmdStatus(res.get()), "COMMIT") != 0)
            throw DbError("PostgreSQL: the transaction was rolled back", true);
    }

    void rollback() noexcept override {
        reset_clicks();
        inserted_ = 0;  // those rows are gone again
        if (conn_ && PQstatus(conn_) == CONNECTION_OK && PQtransactionStatus(conn_) != PQTRANS_IDLE) {
            PGresult* r = PQexec(conn_, "ROLLBACK");
            PQclear(r);
        }
        in_tx_ = false;
    }

    void add_click(const ClickRow& r) override {
        array_append(&a_event_, r.event_id, false);
        if (a_ref_.size() > 1) a_ref_.push_back(',');
        a_ref_ += std::to_string(r.referral_id);
        array_append(&a_visitor_, r.visitor_id, true);
        array_append(&a_ip_, r.ip, true);
        array_append(&a_ua_, r.user_agent, true);
        array_append(&a_target_, r.target, true);
        array_append(&a_referer_, r.referer, true);
        array_append(&a_host_, r.host, true);
        array_append(&a_at_, r.created_at, false);
        pending_++;
    }

    std::int64_t flush_clicks() override {
        flush_clicks_now();
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
            a->assign("{");
        }
        pending_ = 0;
    }

    void flush_clicks_now() {
        if (pending_ == 0) return;
        for (std::string* a : {&a_event_, &a_ref_, &a_visitor_, &a_ip_, &a_ua_, &a_target_,
                               &a_referer_, &a_host_, &a_at_}) {
            a->push_back('}');
        }
        std::int64_t n = exec(kClicks,
            "INSERT INTO referral_response (event_id, referral_id, action, visitor_id, ip,"
            " user_agent, target, referer, host, created_at)"
            " SELECT e, r, 'click', v, i, u, t, rf, h, c::timestamptz"
            " FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],"
            " $6::text[], $7::text[], $8::text[], $9::text[]) AS x(e, r, v, i, u, t, rf, h, c)"
            " ON CONFLICT (event_id) DO NOTHING",
            {Param::Text(a_event_), Param::Text(a_ref_), Param::Text(a_visitor_), Param::Text(a_ip_),
             Param::Text(a_ua_), Param::Text(a_target_), Param::Text(a_referer_), Param::Text(a_host_),
             Param::Text(a_at_)});
        reset_clicks();
        inserted_ += n;
    }

    Result run(int id, const char* sql, std::initializer_list<Param> params) {
        if (id != kClicks) flush_clicks_now();
        std::size_t i = static_cast<std::size_t>(id);
        if (i >= prepared_.size()) prepared_.resize(i + 1, false);
        std::string name = "q" + std::to_string(id);
        if (!prepared_[i]) {
            Result p(PQprepare(conn_, name.c_str(), sql, static_cast<int>(params.size()), nullptr));
            check(p.get(), "prepare");
            prepared_[i] = true;
        }
        // Text parameters must be NUL-terminated for libpq.
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
        Result res(PQexecPrepared(conn_, name.c_str(), static_cast<int>(values.size()), values.data(),
                                  nullptr, nullptr, 0));
        check(res.get(), name.c_str());
        return res;
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

    PGconn* conn_ = nullptr;
    std::vector<bool> prepared_;
    bool in_tx_ = false;
    std::string a_event_, a_ref_, a_visitor_, a_ip_, a_ua_, a_target_, a_referer_, a_host_, a_at_;
    std::int64_t pending_ = 0;
    std::int64_t inserted_ = 0;
};

}  // namespace

std::unique_ptr<Db> open_postgres(const std::string& conninfo) {
    return std::make_unique<PgDb>(conninfo);
}

}  // namespace referral::worker
