#include "annals/actors/file_projection.hpp"

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "annals/error.hpp"

namespace annals::actors {

namespace {

constexpr std::string_view header_prefix = R"({"annals_offset":)";
constexpr std::string_view offset_file = ".annals-offset";
constexpr std::string_view lock_file = ".annals-lock";
constexpr std::string_view offset_prefix = "annals-offset ";
constexpr std::string_view reset_mark = " reset";

std::string errno_text(int err) {
  return std::system_category().message(err);
}

caf::error model_error(std::string text) {
  return make_error(projection_errc::read_model_failed, std::move(text));
}

std::string join(const std::string& dir, std::string_view name) {
  std::string path = dir;
  if (!path.empty() && path.back() != '/')
    path.push_back('/');
  path.append(name);
  return path;
}

#ifdef ANNALS_FILE_SINK_FAILPOINTS
// Only in builds for the crash test: `ANNALS_FILE_SINK_FAILPOINT=<where>:<n>` ends the
// process with status 86 the `n`th time `where` is reached.
void failpoint(std::string_view where) {
  static int hits = 0;
  const char* spec = std::getenv("ANNALS_FILE_SINK_FAILPOINT");
  if (spec == nullptr)
    return;
  std::string_view s{spec};
  auto colon = s.find(':');
  if (colon == std::string_view::npos || s.substr(0, colon) != where)
    return;
  if (++hits == std::atoi(spec + colon + 1))
    ::_exit(86);
}
#else
void failpoint(std::string_view) {}
#endif

/// Reads the whole of `path`; nothing if it does not exist. Throws on other errors.
std::optional<std::string> read_whole(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return std::nullopt;
    throw std::runtime_error{"cannot open '" + path + "': " + errno_text(errno)};
  }
  std::string data;
  char buf[65536];
  for (;;) {
    auto n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      auto err = errno;
      ::close(fd);
      throw std::runtime_error{"cannot read '" + path + "': " + errno_text(err)};
    }
    if (n == 0)
      break;
    data.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return data;
}

/// Splits a stored model file into its header offset and content; nothing without a header.
std::optional<model_file> parse_model(std::string_view data) {
  if (data.substr(0, header_prefix.size()) != header_prefix)
    return std::nullopt;
  auto end = data.find('\n');
  if (end == std::string_view::npos || end < header_prefix.size() + 2 || data[end - 1] != '}')
    return std::nullopt;
  model_file m;
  const char* first = data.data() + header_prefix.size();
  const char* last = data.data() + end - 1;
  auto [ptr, ec] = std::from_chars(first, last, m.offset);
  if (ec != std::errc{} || ptr != last)
    return std::nullopt;
  m.content.assign(data.substr(end + 1));
  return m;
}

/// Writes `data` to `dir/.name.tmp`, fsyncs it (if `sync`) and renames it to `dir/name`.
caf::error write_atomic(const std::string& dir, std::string_view name, std::string_view data,
                        bool sync) {
  auto tmp = join(dir, "." + std::string{name} + ".tmp");
  auto path = join(dir, name);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return model_error("cannot create '" + tmp + "': " + errno_text(errno));
  std::size_t done = 0;
  while (done < data.size()) {
    auto n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      auto err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return model_error("cannot write '" + tmp + "': " + errno_text(err));
    }
    done += static_cast<std::size_t>(n);
  }
  if (sync && ::fsync(fd) != 0) {
    auto err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return model_error("cannot fsync '" + tmp + "': " + errno_text(err));
  }
  if (::close(fd) != 0) {
    auto err = errno;
    ::unlink(tmp.c_str());
    return model_error("cannot close '" + tmp + "': " + errno_text(err));
  }
  failpoint("before_rename");
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    auto err = errno;
    ::unlink(tmp.c_str());
    return model_error("cannot rename '" + tmp + "' to '" + path + "': " + errno_text(err));
  }
  return {};
}

caf::error sync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return model_error("cannot open directory '" + dir + "': " + errno_text(errno));
  auto rc = ::fsync(fd);
  auto err = errno;
  ::close(fd);
  if (rc != 0)
    return model_error("cannot fsync directory '" + dir + "': " + errno_text(err));
  return {};
}

/// The names in `dir`, without `.` and `..`.
caf::expected<std::vector<std::string>> list_directory(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr)
    return model_error("cannot list directory '" + dir + "': " + errno_text(errno));
  std::vector<std::string> names;
  while (auto* entry = ::readdir(d)) {
    std::string_view n{entry->d_name};
    if (n != "." && n != "..")
      names.emplace_back(n);
  }
  ::closedir(d);
  return names;
}

struct stored_offset {
  std::uint64_t offset = 0;
  bool resetting = false;
};

caf::expected<stored_offset> load_offset(const std::string& dir) {
  auto path = join(dir, offset_file);
  std::optional<std::string> data;
  try {
    data = read_whole(path);
  } catch (const std::exception& e) {
    return model_error(e.what());
  }
  if (!data)
    return stored_offset{};
  std::string_view s{*data};
  if (s.substr(0, offset_prefix.size()) != offset_prefix || s.empty() || s.back() != '\n')
    return model_error("'" + path + "' is not an offset file of annals");
  s.remove_prefix(offset_prefix.size());
  s.remove_suffix(1);
  stored_offset out;
  if (s.ends_with(reset_mark)) {
    out.resetting = true;
    s.remove_suffix(reset_mark.size());
  }
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out.offset);
  if (ec != std::errc{} || ptr != s.data() + s.size())
    return model_error("'" + path + "' holds no offset");
  return out;
}

caf::error save_offset(const std::string& dir, std::uint64_t offset, bool resetting, bool sync) {
  auto text = std::string{offset_prefix} + std::to_string(offset)
              + (resetting ? std::string{reset_mark} : std::string{}) + "\n";
  if (auto err = write_atomic(dir, offset_file, text, sync))
    return err;
  return sync ? sync_directory(dir) : caf::error{};
}

class file_sink final : public projection_sink {
public:
  file_sink(file_projection_options opts, std::shared_ptr<file_projection_handler> h)
    : opts_(std::move(opts)), handler_(std::move(h)) {}

  ~file_sink() override {
    if (lock_fd_ >= 0)
      ::close(lock_fd_);
  }

  caf::expected<std::uint64_t> open() override {
    if (opts_.directory.empty())
      return fail("no directory given");
    if (::mkdir(opts_.directory.c_str(), 0755) != 0 && errno != EEXIST)
      return fail("cannot create directory: " + errno_text(errno));
    if (lock_fd_ < 0) {
      auto path = join(opts_.directory, lock_file);
      int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0)
        return fail("cannot open lock file '" + path + "': " + errno_text(errno));
      if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        auto err = errno;
        ::close(fd);
        if (err == EWOULDBLOCK)
          return fail("the directory is in use by another instance (" + std::string{lock_file}
                      + " is locked)");
        return fail("cannot lock '" + path + "': " + errno_text(err));
      }
      lock_fd_ = fd;
    }
    // Temporary files of a write that a crash interrupted: never renamed, so not part of
    // the model.
    auto names = list_directory(opts_.directory);
    if (!names)
      return std::move(names.error());
    for (const auto& n : *names)
      if (n.size() > 5 && n.front() == '.' && n.ends_with(".tmp"))
        ::unlink(join(opts_.directory, n).c_str());
    auto stored = load_offset(opts_.directory);
    if (!stored)
      return prefixed(std::move(stored.error()));
    if (stored->resetting) {
      if (auto err = finish_reset())
        return err;
      return std::uint64_t{0};
    }
    return stored->offset;
  }

  batch_outcome apply(std::span<const persistence::event_record> batch,
                      std::uint64_t prev) override {
    batch_outcome out{prev, 0, {}};
    if (lock_fd_ < 0) {
      out.err = fail("the sink is not open (its lock is not held)");
      return out;
    }
    auto stored = load_offset(opts_.directory);
    if (!stored || stored->offset != prev || stored->resetting) {
      out.err = stored ? offset_moved_error(opts_.name, opts_.directory, prev, stored->offset)
                       : prefixed(std::move(stored.error()));
      return out;
    }
    file_batch files{opts_.directory};
    for (const auto& rec : batch) {
      if (opts_.filter.matches(rec)) {
        files.begin_event(rec.offset);
        try {
          handler_->apply(files, rec);
        } catch (...) {
          files.end_event(false);
          out.err = handler_error(opts_.name, rec, current_exception_text());
          break;
        }
        files.end_event(true);
        ++out.applied;
      }
      out.last_good = rec.offset;
    }
    // Each file carries the offset of its newest event: a crash between these renames and
    // the offset's leaves files that the replay of this batch skips.
    bool wrote = false;
    for (const auto& [name, f] : files.files()) {
      if (!f.dirty)
        continue;
      if (wrote)
        failpoint("between_files");
      auto data = std::string{header_prefix} + std::to_string(f.offset) + "}\n" + f.content;
      if (auto err = write_atomic(opts_.directory, name, data, opts_.fsync)) {
        out.err = prefixed(std::move(err));
        out.last_good = prev;
        out.applied = 0;
        return out;
      }
      wrote = true;
    }
    if (wrote && opts_.fsync) {
      if (auto err = sync_directory(opts_.directory)) {
        out.err = prefixed(std::move(err));
        out.last_good = prev;
        out.applied = 0;
        return out;
      }
    }
    if (wrote)
      failpoint("before_offset");
    if (out.last_good != prev) {
      if (auto err = save_offset(opts_.directory, out.last_good, false, opts_.fsync)) {
        out.err = prefixed(std::move(err));
        out.last_good = prev;
        out.applied = 0;
      }
    }
    return out;
  }

  caf::error reset() override {
    if (lock_fd_ < 0)
      return fail("the sink is not open (its lock is not held)");
    if (auto err = save_offset(opts_.directory, 0, true, opts_.fsync))
      return prefixed(std::move(err));
    return finish_reset();
  }

  delivery guarantee() const noexcept override {
    return delivery::exactly_once;
  }

private:
  /// Removes the model files (those with the header), then stores offset 0 without the
  /// reset mark.
  caf::error finish_reset() {
    auto names = list_directory(opts_.directory);
    if (!names)
      return prefixed(std::move(names.error()));
    for (const auto& n : *names) {
      if (n.empty() || n.front() == '.')
        continue;
      auto m = read_model_file(opts_.directory, n);
      if (m && ::unlink(join(opts_.directory, n).c_str()) != 0 && errno != ENOENT)
        return fail("cannot remove model file '" + n + "': " + errno_text(errno));
    }
    if (opts_.fsync)
      if (auto err = sync_directory(opts_.directory))
        return prefixed(std::move(err));
    try {
      handler_->reset();
    } catch (...) {
      return make_error(projection_errc::handler_failed,
                        "projection '" + opts_.name
                          + "': reset threw: " + current_exception_text());
    }
    if (auto err = save_offset(opts_.directory, 0, false, opts_.fsync))
      return prefixed(std::move(err));
    return {};
  }

  caf::error fail(const std::string& what) const {
    return model_error("projection '" + opts_.name + "', directory '" + opts_.directory
                       + "': " + what);
  }

  caf::error prefixed(caf::error err) const {
    return make_error(projection_errc::read_model_failed,
                      "projection '" + opts_.name + "': " + render(err));
  }

  file_projection_options opts_;
  std::shared_ptr<file_projection_handler> handler_;
  int lock_fd_ = -1;
};

} // namespace

caf::error validate_file_name(std::string_view name) {
  auto bad = [&](const char* rule) {
    return model_error("file name '" + std::string{name} + "' " + rule);
  };
  if (name.empty())
    return model_error("a file name is empty");
  if (name.size() > 255)
    return bad("is longer than 255 bytes");
  if (name.find('/') != std::string_view::npos)
    return bad("contains '/' (files live in the projection's directory, no subdirectories)");
  if (name.find('\0') != std::string_view::npos)
    return bad("contains a NUL byte");
  if (name.find("..") != std::string_view::npos)
    return bad("contains '..'");
  if (name.front() == '.')
    return bad("starts with '.' (reserved for the sink's own files)");
  return {};
}

file_batch::file_batch(std::string directory) : directory_(std::move(directory)) {}

void file_batch::begin_event(std::uint64_t offset) {
  current_ = offset;
  undo_.clear();
}

void file_batch::end_event(bool commit) {
  if (!commit)
    for (auto& [name, saved] : undo_)
      files_.find(name)->second = std::move(saved);
  undo_.clear();
}

file_batch::file_state& file_batch::load(std::string_view name) {
  if (auto err = validate_file_name(name))
    throw std::invalid_argument{render(err)};
  if (auto i = files_.find(name); i != files_.end())
    return i->second;
  file_state st;
  auto path = join(directory_, name);
  if (auto data = read_whole(path)) {
    auto m = parse_model(*data);
    if (!m)
      throw std::runtime_error{"file '" + path
                               + "' is not a model file (its first line is not the "
                                 "annals_offset header)"};
    st.offset = m->offset;
    st.content = std::move(m->content);
    st.present = true;
  }
  return files_.emplace(std::string{name}, std::move(st)).first->second;
}

file_batch::file_state* file_batch::writable(std::string_view name) {
  auto& f = load(name);
  if (current_ <= f.offset)
    return nullptr; // the file holds this event already: a replay after a crash
  undo_.try_emplace(std::string{name}, f);
  return &f;
}

void file_batch::append_line(std::string_view name, std::string_view line) {
  if (line.find('\n') != std::string_view::npos)
    throw std::invalid_argument{"a line appended to '" + std::string{name}
                                + "' contains a newline"};
  if (auto* f = writable(name)) {
    f->content.append(line);
    f->content.push_back('\n');
    f->offset = current_;
    f->present = f->dirty = true;
  }
}

void file_batch::replace(std::string_view name, std::string_view content) {
  if (auto* f = writable(name)) {
    f->content.assign(content);
    f->offset = current_;
    f->present = f->dirty = true;
  }
}

std::string file_batch::read(std::string_view name) {
  return load(name).content;
}

bool file_batch::exists(std::string_view name) {
  return load(name).present;
}

file_projection_handler::~file_projection_handler() = default;

void file_projection_handler::reset() {
  // nothing to clear by default
}

std::shared_ptr<projection_sink> make_file_sink(std::shared_ptr<file_projection_handler> handler,
                                                file_projection_options opts) {
  return std::make_shared<file_sink>(std::move(opts), std::move(handler));
}

projection spawn_projection(caf::actor_system& sys, persistence::journal_ptr journal,
                            std::shared_ptr<file_projection_handler> handler,
                            file_projection_options opts) {
  sink_options so{opts.name, opts.page_size, opts.max_queued_batches};
  return spawn_projection(sys, std::move(journal),
                          make_file_sink(std::move(handler), std::move(opts)), std::move(so));
}

caf::expected<model_file> read_model_file(const std::string& directory, std::string_view name) {
  if (auto err = validate_file_name(name))
    return err;
  auto path = join(directory, name);
  std::optional<std::string> data;
  try {
    data = read_whole(path);
  } catch (const std::exception& e) {
    return model_error(e.what());
  }
  if (!data)
    return model_error("model file '" + path + "' does not exist");
  auto m = parse_model(*data);
  if (!m)
    return model_error("'" + path + "' is not a model file (no annals_offset header)");
  return std::move(*m);
}

caf::expected<std::uint64_t> read_stored_offset(const std::string& directory) {
  auto st = load_offset(directory);
  if (!st)
    return std::move(st.error());
  return st->offset;
}

} // namespace annals::actors
