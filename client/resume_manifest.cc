#include "client/resume_manifest.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"

namespace quantd {

absl::StatusOr<std::unique_ptr<Manifest>> Manifest::Open(const std::string& path,
                                                         bool keep_existing) {
  auto manifest = std::unique_ptr<Manifest>(new Manifest());
  manifest->path_ = path;
  if (keep_existing) {
    std::ifstream in(path, std::ios::binary);
    std::string line;
    while (std::getline(in, line)) {
      absl::StatusOr<Json> entry = ParseJson(line);
      if (!entry.ok() || !entry->is_object() || !entry->contains("tensor") ||
          !(*entry)["tensor"].is_string()) {
        continue;  // torn or foreign line
      }
      std::string name = (*entry)["tensor"].get<std::string>();
      manifest->entries_[name] = *std::move(entry);
    }
  }
  manifest->fd_ = ::open(path.c_str(),
                         O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC |
                             (keep_existing ? 0 : O_TRUNC),
                         0644);
  if (manifest->fd_ < 0) {
    return absl::InternalError(
        absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  return manifest;
}

Manifest::~Manifest() {
  if (fd_ >= 0) ::close(fd_);
}

const Json* Manifest::Find(const std::string& tensor) const {
  auto it = entries_.find(tensor);
  return it == entries_.end() ? nullptr : &it->second;
}

absl::Status Manifest::Append(const OrderedJson& entry) {
  const std::string line = WriteJson(entry) + "\n";
  absl::MutexLock lock(&mu_);
  size_t done = 0;
  while (done < line.size()) {
    ssize_t w = ::write(fd_, line.data() + done, line.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(
          absl::StrCat("cannot write ", path_, ": ", std::strerror(errno)));
    }
    done += static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

void Manifest::Remove() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(path_.c_str());
}

}  // namespace quantd
