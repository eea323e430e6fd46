// The module's on-disk spool: events that Redis has not acknowledged while it
// is unreachable or while the in-memory buffer is full. POSIX file I/O only,
// no nginx, so it can be tested on its own.
//
// Files in the spool directory:
//   w-<pid>-<seq>.part                     being appended to by its writer
//   s-<ms>-<pid>-<seq>.spool               sealed, waiting for replay
//   s-<ms>-<pid>-<seq>.spool.<pid2>.claim  being replayed
//   j-<pid>-<seq>.journal                  a worker's journal (core/journal.h)
// <ms> is when the oldest record in the file was first queued, so name order
// is event order. A record is "<decimal length>\n<bytes>" (one RESP command).
//
// Ownership is an flock() held by the writer or the replaying process, not a
// pid: the kernel drops it when the process dies, however it dies, and pids
// are reused (containers restart with the same ones). A part or claim file
// nobody holds is an orphan: it is sealed or put back for replay by whoever
// finds it. Replaying a claim twice is harmless, since every event carries a
// unique id.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/decimal.h"

namespace referral {

class Spool {
public:
    // `file_limit`: a part file is sealed once it grows past this size, so a
    // replay reads a bounded amount at a time. `max_bytes` (0: no limit)
    // bounds the directory: the size of its files, as measured by the last
    // recover_orphans() (the caller runs it every second) plus what this
    // process appended since, so several writers may overshoot it by what
    // they append in between.
    Spool(std::string dir, std::size_t file_limit, std::size_t max_bytes = 0);
    ~Spool();
    Spool(const Spool&) = delete;
    Spool& operator=(const Spool&) = delete;

    // Appends one record to this process's part file. `queued_ms` is when the
    // event was first queued (it dates the file when it is the first record).
    // False with `err` set when the write failed, or when the directory is
    // at `max_bytes` (then full() is true); the caller keeps the event.
    bool append(std::string_view record, std::int64_t queued_ms, std::string* err);

    // The last append() was refused because the directory is at max_bytes.
    bool full() const { return full_; }

    // Closes and seals this process's part file, if any.
    bool seal(std::string* err);

    // Seals part files and journal segments (core/journal.h) and releases
    // claims that no live process holds; measures the directory. Returns
    // how many records the journal segments it sealed held.
    std::size_t recover_orphans();

    // True when this process has an unsealed part file with records.
    bool has_part() const { return part_fd_ >= 0 && part_size_ > 0; }

    // Claims the oldest sealed file and reads its records. False when there
    // is nothing to claim. `claim` names the file for release()/unclaim();
    // `file_ms` is the time its name carries.
    bool claim_next(std::vector<std::string>* records, std::string* claim,
                    std::int64_t* file_ms, std::string* err);

    // Deletes a claimed file once every record in it is acknowledged.
    void release(const std::string& claim);

    // Puts a claim back for replay.
    void unclaim(const std::string& claim);

    // Sealed files waiting (not counting claims).
    std::size_t sealed_count() const;

private:
    std::string path(std::string_view name) const;
    bool open_part(std::int64_t first_ms, std::string* err);
    std::size_t recover_journal(const std::string& name, int fd, std::int64_t mtime);

    std::string dir_;
    std::size_t file_limit_;
    std::size_t max_bytes_;
    std::size_t dir_bytes_ = 0;
    bool full_ = false;
    int part_fd_ = -1;
    std::size_t part_size_ = 0;
    std::int64_t part_first_ms_ = 0;
    std::string part_name_;
    unsigned long seq_ = 0;
    std::map<std::string, int> claims_;  // claim name -> locked fd
};

// The head of a record of `len` bytes, "<len>\n", written at `out` (room
// for kRecordHeadMax bytes); returns its length. The journal's records are
// the same (core/journal.h).
constexpr std::size_t kRecordHeadMax = kMaxDecimalLen + 1;
inline std::size_t write_record_head(std::size_t len, char* out) noexcept {
    const std::size_t n = write_decimal(len, out);
    out[n] = '\n';
    return n + 1;
}

// Splits a spool file's contents into records; stops at a torn tail (a
// record cut short by a crash) and reports how many bytes it ignored.
std::vector<std::string> parse_spool_records(std::string_view data,
                                             std::size_t* torn_bytes);

}  // namespace referral
