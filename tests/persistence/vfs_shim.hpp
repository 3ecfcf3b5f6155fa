#pragma once

// An SQLite VFS that wraps the default one (`unix`) and makes xWrite or xSync fail on
// demand, for the fault tests. While a `fault_vfs` lives it is SQLite's default VFS, so
// every connection opened meanwhile (`sqlite3_open_v2` without a VFS name, as the journal
// does) goes through it; only files whose path starts with the given prefix are faulted.
//
//   fault_vfs vfs{dir.path().string()};          // registered as the default VFS
//   vfs.arm(io_fault::sync);                     // xSync -> SQLITE_IOERR_FSYNC from now on
//   vfs.arm(io_fault::write, 3);                 // 3 more writes pass, then SQLITE_IOERR_WRITE
//   vfs.arm(io_fault::none);                     // healthy again
//
// Destroy it only after every connection opened through it is closed: it unregisters
// itself, which makes the wrapped VFS the default again.

#include <atomic>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include <sqlite3.h>

namespace annals::test {

/// What the shim does to the files it faults.
enum class io_fault : int {
  none,  ///< pass everything through
  write, ///< xWrite fails with SQLITE_IOERR_WRITE
  sync,  ///< xSync fails with SQLITE_IOERR_FSYNC
};

class fault_vfs {
public:
  /// Registers the shim as SQLite's default VFS, wrapping the current default; faults only
  /// files whose full path starts with `path_prefix`.
  explicit fault_vfs(std::string path_prefix) : prefix_(std::move(path_prefix)) {
    real_ = sqlite3_vfs_find(nullptr);
    if (real_ == nullptr)
      throw std::runtime_error{"SQLite has no default VFS"};
    vfs_.iVersion = real_->iVersion < 3 ? real_->iVersion : 3;
    vfs_.szOsFile = static_cast<int>(sizeof(file)) + real_->szOsFile;
    vfs_.mxPathname = real_->mxPathname;
    vfs_.zName = "annals-fault";
    vfs_.pAppData = this;
    vfs_.xOpen = &x_open;
    vfs_.xDelete = [](sqlite3_vfs* v, const char* name, int sync_dir) {
      return real(v)->xDelete(real(v), name, sync_dir);
    };
    vfs_.xAccess = [](sqlite3_vfs* v, const char* name, int flags, int* out) {
      return real(v)->xAccess(real(v), name, flags, out);
    };
    vfs_.xFullPathname = [](sqlite3_vfs* v, const char* name, int n, char* out) {
      return real(v)->xFullPathname(real(v), name, n, out);
    };
    vfs_.xDlOpen = [](sqlite3_vfs* v, const char* name) { return real(v)->xDlOpen(real(v), name); };
    vfs_.xDlError = [](sqlite3_vfs* v, int n, char* msg) { real(v)->xDlError(real(v), n, msg); };
    vfs_.xDlSym = [](sqlite3_vfs* v, void* lib, const char* sym) {
      return real(v)->xDlSym(real(v), lib, sym);
    };
    vfs_.xDlClose = [](sqlite3_vfs* v, void* lib) { real(v)->xDlClose(real(v), lib); };
    vfs_.xRandomness = [](sqlite3_vfs* v, int n, char* out) {
      return real(v)->xRandomness(real(v), n, out);
    };
    vfs_.xSleep = [](sqlite3_vfs* v, int us) { return real(v)->xSleep(real(v), us); };
    vfs_.xCurrentTime = [](sqlite3_vfs* v, double* out) {
      return real(v)->xCurrentTime(real(v), out);
    };
    vfs_.xGetLastError = [](sqlite3_vfs* v, int n, char* out) {
      return real(v)->xGetLastError(real(v), n, out);
    };
    if (vfs_.iVersion >= 2)
      vfs_.xCurrentTimeInt64 = [](sqlite3_vfs* v, sqlite3_int64* out) {
        return real(v)->xCurrentTimeInt64(real(v), out);
      };
    if (vfs_.iVersion >= 3) {
      vfs_.xSetSystemCall = [](sqlite3_vfs* v, const char* name, sqlite3_syscall_ptr p) {
        return real(v)->xSetSystemCall(real(v), name, p);
      };
      vfs_.xGetSystemCall = [](sqlite3_vfs* v, const char* name) {
        return real(v)->xGetSystemCall(real(v), name);
      };
      vfs_.xNextSystemCall = [](sqlite3_vfs* v, const char* name) {
        return real(v)->xNextSystemCall(real(v), name);
      };
    }
    if (sqlite3_vfs_register(&vfs_, 1) != SQLITE_OK)
      throw std::runtime_error{"cannot register the fault VFS"};
  }

  ~fault_vfs() {
    sqlite3_vfs_unregister(&vfs_);
  }

  fault_vfs(const fault_vfs&) = delete;
  fault_vfs& operator=(const fault_vfs&) = delete;

  /// From now on, let `pass` more faultable calls through, then fail each one with `f`.
  void arm(io_fault f, std::int64_t pass = 0) {
    pass_.store(pass);
    fault_.store(f);
  }

  /// Calls that failed because of the shim, since it was registered.
  std::uint64_t failed_writes() const {
    return failed_writes_.load();
  }
  std::uint64_t failed_syncs() const {
    return failed_syncs_.load();
  }
  /// Files currently open through the shim (faultable or not).
  int open_files() const {
    return open_files_.load();
  }

private:
  // The shim's file; the wrapped VFS's file follows it in the same allocation.
  struct file {
    sqlite3_file base;
    fault_vfs* owner;
    bool faultable;
    sqlite3_file* real() {
      return reinterpret_cast<sqlite3_file*>(this + 1);
    }
  };
  // The wrapped file starts right after ours and must be aligned for its 64-bit members.
  static_assert(sizeof(file) % alignof(std::int64_t) == 0);

  std::string prefix_;
  sqlite3_vfs* real_ = nullptr;
  sqlite3_vfs vfs_{};
  std::atomic<io_fault> fault_{io_fault::none};
  std::atomic<std::int64_t> pass_{0};
  std::atomic<std::uint64_t> failed_writes_{0};
  std::atomic<std::uint64_t> failed_syncs_{0};
  std::atomic<int> open_files_{0};

  static sqlite3_vfs* real(sqlite3_vfs* v) {
    return static_cast<fault_vfs*>(v->pAppData)->real_;
  }
  static file* self(sqlite3_file* f) {
    return reinterpret_cast<file*>(f);
  }
  static sqlite3_file* inner(sqlite3_file* f) {
    return self(f)->real();
  }

  // True if this call must fail with `f`.
  bool should_fail(io_fault f) {
    if (fault_.load() != f)
      return false;
    if (pass_.load() > 0 && pass_.fetch_sub(1) > 0)
      return false;
    return true;
  }

  static int x_open(sqlite3_vfs* v, const char* name, sqlite3_file* f, int flags, int* out_flags) {
    auto* owner = static_cast<fault_vfs*>(v->pAppData);
    auto* sf = self(f);
    sf->owner = owner;
    sf->faultable =
      name != nullptr && std::strncmp(name, owner->prefix_.c_str(), owner->prefix_.size()) == 0;
    auto* r = sf->real();
    r->pMethods = nullptr;
    auto rc = owner->real_->xOpen(owner->real_, name, r, flags, out_flags);
    // SQLite calls xClose exactly when pMethods is set, so mirror the wrapped file.
    sf->base.pMethods = r->pMethods ? &methods : nullptr;
    if (r->pMethods)
      owner->open_files_.fetch_add(1);
    return rc;
  }

  // Defined after the class: its lambdas use members, so the class must be complete.
  static const sqlite3_io_methods methods;
};

inline const sqlite3_io_methods fault_vfs::methods = {
  3,
  // xClose
  [](sqlite3_file* f) {
    auto* owner = self(f)->owner;
    auto rc = inner(f)->pMethods->xClose(inner(f));
    owner->open_files_.fetch_sub(1);
    return rc;
  },
  // xRead
  [](sqlite3_file* f, void* buf, int n, sqlite3_int64 off) {
    return inner(f)->pMethods->xRead(inner(f), buf, n, off);
  },
  // xWrite
  [](sqlite3_file* f, const void* buf, int n, sqlite3_int64 off) {
    auto* sf = self(f);
    if (sf->faultable && sf->owner->should_fail(io_fault::write)) {
      sf->owner->failed_writes_.fetch_add(1);
      return SQLITE_IOERR_WRITE;
    }
    return inner(f)->pMethods->xWrite(inner(f), buf, n, off);
  },
  // xTruncate
  [](sqlite3_file* f, sqlite3_int64 size) { return inner(f)->pMethods->xTruncate(inner(f), size); },
  // xSync
  [](sqlite3_file* f, int flags) {
    auto* sf = self(f);
    if (sf->faultable && sf->owner->should_fail(io_fault::sync)) {
      sf->owner->failed_syncs_.fetch_add(1);
      return SQLITE_IOERR_FSYNC;
    }
    return inner(f)->pMethods->xSync(inner(f), flags);
  },
  // xFileSize
  [](sqlite3_file* f, sqlite3_int64* size) {
    return inner(f)->pMethods->xFileSize(inner(f), size);
  },
  // xLock
  [](sqlite3_file* f, int lock) { return inner(f)->pMethods->xLock(inner(f), lock); },
  // xUnlock
  [](sqlite3_file* f, int lock) { return inner(f)->pMethods->xUnlock(inner(f), lock); },
  // xCheckReservedLock
  [](sqlite3_file* f, int* out) { return inner(f)->pMethods->xCheckReservedLock(inner(f), out); },
  // xFileControl
  [](sqlite3_file* f, int op, void* arg) {
    return inner(f)->pMethods->xFileControl(inner(f), op, arg);
  },
  // xSectorSize
  [](sqlite3_file* f) { return inner(f)->pMethods->xSectorSize(inner(f)); },
  // xDeviceCharacteristics
  [](sqlite3_file* f) { return inner(f)->pMethods->xDeviceCharacteristics(inner(f)); },
  // xShmMap
  [](sqlite3_file* f, int page, int size, int extend, void volatile** out) {
    auto* m = inner(f)->pMethods;
    return m->iVersion >= 2 ? m->xShmMap(inner(f), page, size, extend, out) : SQLITE_IOERR;
  },
  // xShmLock
  [](sqlite3_file* f, int offset, int n, int flags) {
    auto* m = inner(f)->pMethods;
    return m->iVersion >= 2 ? m->xShmLock(inner(f), offset, n, flags) : SQLITE_IOERR;
  },
  // xShmBarrier
  [](sqlite3_file* f) {
    auto* m = inner(f)->pMethods;
    if (m->iVersion >= 2)
      m->xShmBarrier(inner(f));
  },
  // xShmUnmap
  [](sqlite3_file* f, int del) {
    auto* m = inner(f)->pMethods;
    return m->iVersion >= 2 ? m->xShmUnmap(inner(f), del) : SQLITE_OK;
  },
  // xFetch
  [](sqlite3_file* f, sqlite3_int64 off, int n, void** out) {
    auto* m = inner(f)->pMethods;
    if (m->iVersion >= 3)
      return m->xFetch(inner(f), off, n, out);
    *out = nullptr;
    return SQLITE_OK;
  },
  // xUnfetch
  [](sqlite3_file* f, sqlite3_int64 off, void* p) {
    auto* m = inner(f)->pMethods;
    return m->iVersion >= 3 ? m->xUnfetch(inner(f), off, p) : SQLITE_OK;
  },
};

} // namespace annals::test
