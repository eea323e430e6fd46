#include "core/spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace referral {
namespace {

// A part file younger than this may have been created but not yet locked by
// its writer: it is left alone.
constexpr std::int64_t kOrphanMinAgeMs = 2000;

std::int64_t now_ms() {
    struct timeval tv;
    gettimeofday(&tv, nullptr);
    return static_cast<std::int64_t>(tv.tv_sec) * 1000 + tv.tv_usec / 1000;
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

bool ends_with(std::string_view s, std::string_view p) {
    return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

std::vector<std::string> list_dir(const std::string& dir) {
    std::vector<std::string> names;
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) return names;
    while (struct dirent* e = readdir(d)) {
        if (e->d_name[0] != '.') names.emplace_back(e->d_name);
    }
    closedir(d);
    std::sort(names.begin(), names.end());
    return names;
}

std::string sealed_name(std::int64_t ms, unsigned long seq) {
    char buf[96];
    std::snprintf(buf, sizeof(buf), "s-%013lld-%ld-%010lu.spool", static_cast<long long>(ms),
                  static_cast<long>(getpid()), seq);
    return buf;
}

// "s-<ms>-..." -> ms
std::int64_t name_ms(const std::string& name) {
    return name.size() > 2 ? std::strtoll(name.c_str() + 2, nullptr, 10) : 0;
}

// The sealed name a claim was made from: strip ".<pid>.claim".
std::string unclaimed_name(const std::string& claim) {
    std::size_t dot = claim.rfind('.', claim.size() - 7);
    return dot == std::string::npos ? claim : claim.substr(0, dot);
}

bool read_fd(int fd, std::string* out) {
    out->clear();
    char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return false;
        if (n == 0) return true;
        out->append(buf, static_cast<std::size_t>(n));
    }
}

// Opens and locks a file nobody else holds; -1 when it is held (or gone).
int lock_orphan(const std::string& path) {
    int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

}  // namespace

std::vector<std::string> parse_spool_records(std::string_view data, std::size_t* torn_bytes) {
    std::vector<std::string> records;
    std::size_t pos = 0;
    while (pos < data.size()) {
        std::size_t nl = data.find('\n', pos);
        if (nl == std::string_view::npos || nl == pos || nl - pos > 10) break;
        std::size_t len = 0;
        bool ok = true;
        for (std::size_t i = pos; i < nl; i++) {
            if (data[i] < '0' || data[i] > '9') {
                ok = false;
                break;
            }
            len = len * 10 + static_cast<std::size_t>(data[i] - '0');
        }
        if (!ok || len == 0 || data.size() - (nl + 1) < len) break;
        records.emplace_back(data.substr(nl + 1, len));
        pos = nl + 1 + len;
    }
    if (torn_bytes != nullptr) *torn_bytes = data.size() - pos;
    return records;
}

Spool::Spool(std::string dir, std::size_t file_limit, std::size_t max_bytes)
    : dir_(std::move(dir)), file_limit_(file_limit), max_bytes_(max_bytes) {}

Spool::~Spool() {
    std::string err;
    seal(&err);
    for (auto& c : claims_) close(c.second);  // unlocks: the claim is an orphan now
}

std::string Spool::path(std::string_view name) const {
    std::string p = dir_;
    p += '/';
    p += name;
    return p;
}

bool Spool::open_part(std::int64_t first_ms, std::string* err) {
    char name[64];
    std::snprintf(name, sizeof(name), "w-%ld-%lu.part", static_cast<long>(getpid()), ++seq_);
    part_name_ = name;
    part_fd_ = open(path(part_name_).c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (part_fd_ < 0) {
        *err = "open(\"" + path(part_name_) + "\"): " + std::strerror(errno);
        return false;
    }
    if (flock(part_fd_, LOCK_EX | LOCK_NB) != 0) {
        *err = "flock(\"" + path(part_name_) + "\"): " + std::strerror(errno);
        close(part_fd_);
        part_fd_ = -1;
        return false;
    }
    part_size_ = 0;
    part_first_ms_ = first_ms;
    return true;
}

bool Spool::append(std::string_view record, std::int64_t queued_ms, std::string* err) {
    char head[kRecordHeadMax];
    const std::size_t hl = write_record_head(record.size(), head);
    full_ = max_bytes_ > 0 && dir_bytes_ + hl + record.size() > max_bytes_;
    if (full_) {
        *err = "the spool directory is full (max_size)";
        return false;
    }
    if (part_fd_ < 0 && !open_part(queued_ms, err)) return false;
    struct iovec iov[2];
    iov[0].iov_base = head;
    iov[0].iov_len = hl;
    iov[1].iov_base = const_cast<char*>(record.data());
    iov[1].iov_len = record.size();
    std::size_t want = iov[0].iov_len + iov[1].iov_len;
    ssize_t n = writev(part_fd_, iov, 2);
    if (n < 0 || static_cast<std::size_t>(n) != want) {
        *err = "write(\"" + path(part_name_) + "\"): " + (n < 0 ? std::strerror(errno) : "short write");
        // A short write leaves a torn tail that the reader skips; seal the
        // file and start a fresh one so later records stay readable.
        if (n > 0) {
            part_size_ += static_cast<std::size_t>(n);
            std::string ignored;
            seal(&ignored);
        }
        return false;
    }
    part_size_ += want;
    dir_bytes_ += want;
    if (part_size_ >= file_limit_) return seal(err);
    return true;
}

bool Spool::seal(std::string* err) {
    if (part_fd_ < 0) return true;
    // Unlocked first, so a replayer never finds a sealed file still locked.
    // Should an orphan hunter seal it in between, it is sealed all the same.
    close(part_fd_);
    part_fd_ = -1;
    std::string from = path(part_name_);
    bool ok = true;
    if (part_size_ == 0) {
        unlink(from.c_str());
    } else if (rename(from.c_str(), path(sealed_name(part_first_ms_, seq_)).c_str()) != 0 &&
               errno != ENOENT) {
        *err = "rename(\"" + from + "\"): " + std::strerror(errno);
        ok = false;
    }
    part_size_ = 0;
    return ok;
}

std::size_t Spool::recover_orphans() {
    const std::int64_t now = now_ms();
    std::size_t total = 0;
    std::size_t journaled = 0;
    for (const std::string& name : list_dir(dir_)) {
        struct stat st;
        if (stat(path(name).c_str(), &st) != 0) continue;
        bool part = starts_with(name, "w-") && ends_with(name, ".part");
        bool claim = ends_with(name, ".claim");
        bool journal = starts_with(name, "j-") && ends_with(name, ".journal");
        // A journal segment is sparse and preallocated: what it uses on disk.
        total += journal ? static_cast<std::size_t>(st.st_blocks) * 512 : static_cast<std::size_t>(st.st_size);
        if (!part && !claim && !journal) continue;
        if (part && name == part_name_ && part_fd_ >= 0) continue;
        if (claim && claims_.count(name) > 0) continue;
        std::int64_t mtime = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1000000;
        if ((part || journal) && now - mtime < kOrphanMinAgeMs) continue;
        int fd = lock_orphan(path(name));
        if (fd < 0) continue;  // a live process holds it
        if (journal) {
            journaled += recover_journal(name, fd, mtime);
        } else if (claim) {
            rename(path(name).c_str(), path(unclaimed_name(name)).c_str());
        } else if (st.st_size == 0) {
            unlink(path(name).c_str());
        } else {
            // Dated by its last write: the best we know of an orphan's age.
            rename(path(name).c_str(), path(sealed_name(mtime, ++seq_)).c_str());
        }
        close(fd);
    }
    dir_bytes_ = total;
    return journaled;
}

// A dead worker's journal segment (core/journal.h): cut after its last whole
// record (the rest is a NUL and what an earlier use of the file left) and
// sealed for replay like a part file.
std::size_t Spool::recover_journal(const std::string& name, int fd, std::int64_t mtime) {
    std::string data;
    if (!read_fd(fd, &data)) return 0;  // unreadable now: left for a later try
    std::size_t torn = 0;
    const std::size_t records = parse_spool_records(data, &torn).size();
    const std::size_t keep = data.size() - torn;
    if (keep == 0) {
        unlink(path(name).c_str());
        return 0;
    }
    if (ftruncate(fd, static_cast<off_t>(keep)) != 0 ||
        rename(path(name).c_str(), path(sealed_name(mtime, ++seq_)).c_str()) != 0) {
        return 0;
    }
    return records;
}

bool Spool::claim_next(std::vector<std::string>* records, std::string* claim, std::int64_t* file_ms,
                       std::string* err) {
    for (const std::string& name : list_dir(dir_)) {
        if (!starts_with(name, "s-") || !ends_with(name, ".spool")) continue;
        char suffix[32];
        std::snprintf(suffix, sizeof(suffix), ".%ld.claim", static_cast<long>(getpid()));
        std::string claimed = name + suffix;
        // rename() is atomic: of several workers, exactly one wins a file.
        if (rename(path(name).c_str(), path(claimed).c_str()) != 0) continue;
        int fd = open(path(claimed).c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0) {
            // Someone recovering it as an orphan got there between our
            // rename and lock; let them have it.
            if (fd >= 0) close(fd);
            continue;
        }
        std::string data;
        if (!read_fd(fd, &data)) {
            *err = "read(\"" + path(claimed) + "\"): " + std::strerror(errno);
            rename(path(claimed).c_str(), path(name).c_str());
            close(fd);
            return false;
        }
        std::size_t torn = 0;
        *records = parse_spool_records(data, &torn);
        if (torn > 0) {
            *err = "ignored a torn record of " + std::to_string(torn) + " bytes at the end of \"" +
                   path(claimed) + "\"";
        }
        claims_[claimed] = fd;
        *claim = claimed;
        *file_ms = name_ms(name);
        return true;
    }
    return false;
}

void Spool::release(const std::string& claim) {
    unlink(path(claim).c_str());
    auto it = claims_.find(claim);
    if (it != claims_.end()) {
        close(it->second);
        claims_.erase(it);
    }
}

void Spool::unclaim(const std::string& claim) {
    rename(path(claim).c_str(), path(unclaimed_name(claim)).c_str());
    auto it = claims_.find(claim);
    if (it != claims_.end()) {
        close(it->second);
        claims_.erase(it);
    }
}

std::size_t Spool::sealed_count() const {
    std::size_t n = 0;
    for (const std::string& name : list_dir(dir_)) {
        if (starts_with(name, "s-") && ends_with(name, ".spool")) n++;
    }
    return n;
}

}  // namespace referral
