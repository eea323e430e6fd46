// The journal: every event a worker holds in memory, not yet acknowledged by
// Redis, is also written to a memory-mapped file in the spool directory, so
// that a worker killed with SIGKILL (an OOM kill, a crash) loses nothing.
//
// A write is a memcpy into a shared mapping of the file: no system call per
// event, and the bytes are in the kernel's page cache the moment the store
// retires, so they outlive the process however it dies. They are not synced
// to the disk: the promise is surviving a process kill, not a power cut.
//
// Files (next to the spool's, see core/spool.h):
//   j-<pid>-<seq>.journal   a segment, flock()ed by its writer
// A segment is preallocated and holds spool records ("<len>\n<bytes>")
// followed by a NUL byte, where a reader stops. Each record's first byte is
// stored last, over the NUL that ended the file until then, so a kill in the
// middle of a write leaves the file ending just before that record.
//
// Every record is settled by the caller exactly once, when Redis has
// acknowledged it, it was rejected, dropped, or moved to the spool. A
// segment whose records are all settled starts over from its first byte
// (one store, no system call); a full one is followed by another segment.
// A full segment whose records are all settled is kept, emptied, as the
// spare the next full one is followed by, instead of being deleted: under
// steady traffic two files take turns, and writing a record never faults
// in a fresh page of a new file (a page fault and a block allocation per
// 4 KB, which cost a click more than the rest of the journal). So the
// journal holds no more than the in-memory buffer does, plus one segment.
//
// A segment nobody holds any more is the spool's to recover
// (Spool::recover_orphans): cut after its last whole record and sealed for
// replay, in order, like any spool file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>

namespace referral {

class Journal {
public:
    // `segment_bytes`: the size of a segment file (a record larger than
    // that gets a segment of its own size).
    Journal(std::string dir, std::size_t segment_bytes);
    // Deletes the segments whose records are all settled; the others stay,
    // unlocked, for the next worker to replay.
    ~Journal();
    Journal(const Journal&) = delete;
    Journal& operator=(const Journal&) = delete;

    // Writes one record. Returns the segment it is in (> 0), to be passed
    // to settle(), or 0 with `err` set when no segment could be had (the
    // event then lives in memory only).
    std::uint64_t add(std::string_view record, std::string* err);

    // One record of `segment` (a value add() returned) needs the journal no
    // more.
    void settle(std::uint64_t segment) noexcept;

    // Records written and not settled, over all segments.
    std::size_t live() const noexcept;
    // Segment files this process holds, the spare included.
    std::size_t segments() const noexcept { return segs_.size() + (spare_ ? 1 : 0); }

private:
    struct Segment {
        std::uint64_t id;
        std::string path;
        int fd;
        char* map;
        std::size_t capacity;
        std::size_t used;
        std::size_t live;
    };

    std::string segment_path(std::uint64_t id) const;
    bool open_segment(std::size_t capacity, std::string* err);
    bool reuse_spare();
    static void release(Segment& s) noexcept;  // unlinks, unmaps, closes
    void remove(std::deque<Segment>::iterator it) noexcept;

    std::string dir_;
    std::size_t segment_bytes_;
    std::deque<Segment> segs_;  // oldest first; the back one is written to
    std::optional<Segment> spare_;  // emptied, of segment_bytes_
    bool keep_spare_ = true;
    std::uint64_t next_id_ = 1;
};

}  // namespace referral
