#include "core/journal.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/spool.h"

namespace referral {

Journal::Journal(std::string dir, std::size_t segment_bytes)
    : dir_(std::move(dir)), segment_bytes_(segment_bytes) {}

Journal::~Journal() {
    if (spare_) release(*spare_);
    while (!segs_.empty()) {
        Segment& s = segs_.front();
        if (s.live == 0) {
            unlink(s.path.c_str());
        }
        munmap(s.map, s.capacity);
        close(s.fd);  // unlocks: what is left is an orphan for the next worker
        segs_.pop_front();
    }
}

std::string Journal::segment_path(std::uint64_t id) const {
    char name[64];
    std::snprintf(name, sizeof(name), "/j-%ld-%010llu.journal", static_cast<long>(getpid()),
                  static_cast<unsigned long long>(id));
    return dir_ + name;
}

// The spare becomes the newest segment under a new id and the name that
// goes with it: a recovery replays a dead worker's segments by date, then
// name, so the file must look as new as what it is about to hold. Writing
// its pages does not date it (they are dirty already, until the kernel
// writes them back), so it is dated here. When either step fails, a fresh
// segment instead; a directory that cannot rename without replacing (some
// network filesystems) keeps no spare from then on.
bool Journal::reuse_spare() {
    for (int tries = 0; tries < 1000; tries++) {
        std::string path = segment_path(next_id_);
        // Never over a dead worker's file that had our pid.
        if (renameat2(AT_FDCWD, spare_->path.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) != 0) {
            if (errno == EEXIST) {
                next_id_++;
                continue;
            }
            if (errno == EINVAL || errno == ENOSYS) keep_spare_ = false;
            break;
        }
        spare_->path = std::move(path);
        if (futimens(spare_->fd, nullptr) != 0) break;
        spare_->id = next_id_++;
        segs_.push_back(std::move(*spare_));
        spare_.reset();
        return true;
    }
    release(*spare_);
    spare_.reset();
    return false;
}

bool Journal::open_segment(std::size_t capacity, std::string* err) {
    if (spare_ && spare_->capacity >= capacity && reuse_spare()) return true;
    // O_EXCL: a file of that name is a dead worker's that had our pid (pids
    // are reused), waiting to be recovered; the next number is taken.
    std::string path;
    int fd = -1;
    for (int tries = 0; fd < 0 && tries < 1000; tries++) {
        path = segment_path(next_id_);
        fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST) break;
        if (fd < 0) next_id_++;
    }
    if (fd < 0) {
        *err = "open(\"" + path + "\"): " + std::strerror(errno);
        return false;
    }
    const char* what = nullptr;
    void* map = MAP_FAILED;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        what = "flock";
    } else if (ftruncate(fd, static_cast<off_t>(capacity)) != 0) {
        what = "ftruncate";  // sparse: blocks come as pages are written
    } else if ((map = mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
        what = "mmap";
    }
    if (what != nullptr) {
        *err = std::string(what) + "(\"" + path + "\"): " + std::strerror(errno);
        unlink(path.c_str());
        close(fd);
        return false;
    }
    segs_.push_back(Segment{next_id_++, std::move(path), fd, static_cast<char*>(map), capacity, 0, 0});
    return true;
}

std::uint64_t Journal::add(std::string_view record, std::string* err) {
    char head[kRecordHeadMax];
    const std::size_t hl = write_record_head(record.size(), head);
    const std::size_t need = hl + record.size();
    // A full segment (one byte kept for the NUL after the last record) is
    // followed by a new one, sized for the record if it is a large one.
    if (segs_.empty() || segs_.back().used + need + 1 > segs_.back().capacity) {
        const std::size_t cap = need + 1 > segment_bytes_ ? need + 1 : segment_bytes_;
        if (!open_segment(cap, err)) return 0;
    }
    Segment& s = segs_.back();
    char* at = s.map + s.used;
    // The NUL after it first, then all but its first byte, then the first
    // byte over the NUL that ended the file: a reader never sees half of it.
    if (s.used + need < s.capacity) at[need] = '\0';
    std::memcpy(at + 1, head + 1, hl - 1);
    std::memcpy(at + hl, record.data(), record.size());
    std::atomic_signal_fence(std::memory_order_release);  // keep the stores in this order
    at[0] = head[0];
    s.used += need;
    s.live++;
    return s.id;
}

void Journal::release(Segment& s) noexcept {
    unlink(s.path.c_str());
    munmap(s.map, s.capacity);
    close(s.fd);
}

void Journal::remove(std::deque<Segment>::iterator it) noexcept {
    release(*it);
    segs_.erase(it);
}

void Journal::settle(std::uint64_t segment) noexcept {
    for (auto it = segs_.begin(); it != segs_.end(); ++it) {
        if (it->id != segment) continue;
        if (it->live > 0) it->live--;
        if (it->live > 0) return;
        it->map[0] = '\0';  // empty again: a reader stops at once
        it->used = 0;
        if (std::next(it) == segs_.end()) return;  // start over at the front
        // Full and done with: the spare, unless there is one already or it
        // was sized for one large record.
        if (keep_spare_ && !spare_ && it->capacity == segment_bytes_) {
            spare_.emplace(std::move(*it));  // moves a string: no allocation
            segs_.erase(it);
        } else {
            remove(it);
        }
        return;
    }
}

std::size_t Journal::live() const noexcept {
    std::size_t n = 0;
    for (const Segment& s : segs_) n += s.live;
    return n;
}

}  // namespace referral
