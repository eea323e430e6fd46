#include "core/spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace referral {
namespace {

long long now_ms() {
    struct timeval tv;
    gettimeofday(&tv, nullptr);
    return static_cast<long long>(tv.tv_sec) * 1000 + tv.tv_usec / 1000;
}

bool process_alive(long pid) {
    if (pid <= 0) return false;
    return kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

bool starts_with(std::string_view s, std::string_view p) {
    return s.substr(0, p.size()) == p;
}

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

std::string sealed_name(long long ms, long pid, unsigned long seq) {
    char buf[96];
    std::snprintf(buf, sizeof(buf), "s-%013lld-%ld-%010lu.spool", ms, pid, seq);
    return buf;
}

bool read_file(const std::string& path, std::string* out) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    out->clear();
    char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            close(fd);
            return false;
        }
        if (n == 0) break;
        out->append(buf, static_cast<std::size_t>(n));
    }
    close(fd);
    return true;
}

}  // namespace

std::vector<std::string> parse_spool_records(std::string_view data,
                                             std::size_t* torn_bytes) {
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

Spool::Spool(std::string dir, std::size_t file_limit)
    : dir_(std::move(dir)), file_limit_(file_limit) {}

Spool::~Spool() {
    std::string err;
    seal(&err);
}

std::string Spool::path(std::string_view name) const {
    std::string p = dir_;
    p += '/';
    p += name;
    return p;
}

bool Spool::open_part(std::string* err) {
    char name[64];
    std::snprintf(name, sizeof(name), "w-%ld-%lu.part", static_cast<long>(getpid()), ++seq_);
    part_name_ = name;
    part_fd_ = open(path(part_name_).c_str(),
                    O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (part_fd_ < 0) {
        *err = "open(\"" + path(part_name_) + "\"): " + std::strerror(errno);
        return false;
    }
    part_size_ = 0;
    return true;
}

bool Spool::append(std::string_view record, std::string* err) {
    if (part_fd_ < 0 && !open_part(err)) return false;
    char head[24];
    int hl = std::snprintf(head, sizeof(head), "%zu\n", record.size());
    struct iovec iov[2];
    iov[0].iov_base = head;
    iov[0].iov_len = static_cast<std::size_t>(hl);
    iov[1].iov_base = const_cast<char*>(record.data());
    iov[1].iov_len = record.size();
    std::size_t want = iov[0].iov_len + iov[1].iov_len;
    ssize_t n = writev(part_fd_, iov, 2);
    if (n < 0 || static_cast<std::size_t>(n) != want) {
        *err = "write(\"" + path(part_name_) + "\"): " +
               (n < 0 ? std::strerror(errno) : "short write");
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
    if (part_size_ >= file_limit_) return seal(err);
    return true;
}

bool Spool::seal(std::string* err) {
    if (part_fd_ < 0) return true;
    close(part_fd_);
    part_fd_ = -1;
    std::string from = path(part_name_);
    if (part_size_ == 0) {
        unlink(from.c_str());
        return true;
    }
    std::string to = path(sealed_name(now_ms(), getpid(), seq_));
    if (rename(from.c_str(), to.c_str()) != 0) {
        *err = "rename(\"" + from + "\"): " + std::strerror(errno);
        return false;
    }
    part_size_ = 0;
    return true;
}

void Spool::recover_orphans() {
    for (const std::string& name : list_dir(dir_)) {
        long pid = 0;
        unsigned long seq = 0;
        if (starts_with(name, "w-") && ends_with(name, ".part") &&
            std::sscanf(name.c_str(), "w-%ld-%lu.part", &pid, &seq) == 2) {
            if (pid == static_cast<long>(getpid()) || process_alive(pid)) continue;
            struct stat st;
            long long ms = now_ms();
            if (stat(path(name).c_str(), &st) == 0) {
                ms = static_cast<long long>(st.st_mtim.tv_sec) * 1000 +
                     st.st_mtim.tv_nsec / 1000000;
                if (st.st_size == 0) {
                    unlink(path(name).c_str());
                    continue;
                }
            }
            rename(path(name).c_str(), path(sealed_name(ms, pid, seq)).c_str());
        } else if (ends_with(name, ".claim")) {
            std::size_t dot = name.rfind('.', name.size() - 7);
            if (dot == std::string::npos) continue;
            pid = std::strtol(name.c_str() + dot + 1, nullptr, 10);
            if (pid == static_cast<long>(getpid()) || process_alive(pid)) continue;
            rename(path(name).c_str(), path(name.substr(0, dot)).c_str());
        }
    }
}

bool Spool::claim_next(std::vector<std::string>* records, std::string* claim,
                       std::string* err) {
    for (const std::string& name : list_dir(dir_)) {
        if (!starts_with(name, "s-") || !ends_with(name, ".spool")) continue;
        char suffix[32];
        std::snprintf(suffix, sizeof(suffix), ".%ld.claim", static_cast<long>(getpid()));
        std::string claimed = name + suffix;
        // rename() is atomic: of several workers, exactly one wins a file.
        if (rename(path(name).c_str(), path(claimed).c_str()) != 0) continue;
        std::string data;
        if (!read_file(path(claimed), &data)) {
            *err = "read(\"" + path(claimed) + "\"): " + std::strerror(errno);
            rename(path(claimed).c_str(), path(name).c_str());
            return false;
        }
        std::size_t torn = 0;
        *records = parse_spool_records(data, &torn);
        if (torn > 0) {
            *err = "ignored a torn record of " + std::to_string(torn) +
                   " bytes at the end of \"" + path(claimed) + "\"";
        }
        *claim = claimed;
        return true;
    }
    return false;
}

void Spool::release(const std::string& claim) { unlink(path(claim).c_str()); }

void Spool::unclaim(const std::string& claim) {
    std::size_t dot = claim.rfind('.', claim.size() - 7);
    if (dot == std::string::npos) return;
    rename(path(claim).c_str(), path(claim.substr(0, dot)).c_str());
}

std::size_t Spool::sealed_count() const {
    std::size_t n = 0;
    for (const std::string& name : list_dir(dir_)) {
        if (starts_with(name, "s-") && ends_with(name, ".spool")) n++;
    }
    return n;
}

}  // namespace referral
