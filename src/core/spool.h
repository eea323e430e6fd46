// The module's on-disk spool: events that Redis has not acknowledged while it
// is unreachable or while the in-memory buffer is full. POSIX file I/O only,
// no nginx, so it can be tested on its own.
//
// Files in the spool directory:
//   w-<pid>-<seq>.part                  being appended to by process <pid>
//   s-<ms>-<pid>-<seq>.spool            sealed, waiting for replay (name order
//                                       is time order)
//   s-<ms>-<pid>-<seq>.spool.<pid2>.claim  being replayed by process <pid2>
// A record is "<decimal length>\n<bytes>" (the bytes are one RESP command).
// Files of a process that no longer exists (crash, reload) are sealed or
// released again by whoever finds them, so nothing is left behind; a claim
// replayed twice is harmless because every event carries a unique id.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace referral {

class Spool {
public:
    // `file_limit`: a part file is sealed once it grows past this size, so a
    // replay reads a bounded amount at a time.
    Spool(std::string dir, std::size_t file_limit);
    ~Spool();
    Spool(const Spool&) = delete;
    Spool& operator=(const Spool&) = delete;

    // Appends one record to this process's part file. False with `err` set
    // when the write failed (the caller then still owns the event).
    bool append(std::string_view record, std::string* err);

    // Closes and seals this process's part file, if any.
    bool seal(std::string* err);

    // Seals part files and releases claims left by processes that are gone.
    void recover_orphans();

    // True when this process has an unsealed part file with records.
    bool has_part() const { return part_fd_ >= 0 && part_size_ > 0; }

    // Claims the oldest sealed file and reads its records. False when there
    // is nothing to claim. `claim` names the file for release().
    bool claim_next(std::vector<std::string>* records, std::string* claim,
                    std::string* err);

    // Deletes a claimed file once every record in it is acknowledged.
    void release(const std::string& claim);

    // Puts a claim back for replay (e.g. when this process exits first).
    void unclaim(const std::string& claim);

    // Sealed files waiting (not counting claims).
    std::size_t sealed_count() const;

    const std::string& dir() const { return dir_; }

private:
    std::string path(std::string_view name) const;
    bool open_part(std::string* err);

    std::string dir_;
    std::size_t file_limit_;
    int part_fd_ = -1;
    std::size_t part_size_ = 0;
    std::string part_name_;
    unsigned long seq_ = 0;
};

// Splits a spool file's contents into records; stops at a torn tail (a
// record cut short by a crash) and reports how many bytes it ignored.
std::vector<std::string> parse_spool_records(std::string_view data,
                                             std::size_t* torn_bytes);

}  // namespace referral
