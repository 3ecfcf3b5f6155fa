#pragma once

/// @file
/// Read models kept as files in a directory (e.g. one JSON-lines statement per account),
/// applied exactly once per file, also across a crash at any moment.
///
/// ```cpp
/// class statements
///   : public annals::actors::typed_file_projection<statements, bank::account> {
/// public:
///   void on(const bank::deposited& e, const annals::actors::envelope& env,
///           annals::actors::file_batch& files) {
///     files.append_line(std::string{env.entity_id()} + ".jsonl",
///                       R"({"deposit":)" + std::to_string(e.cents) + "}");
///   }
/// };
///
/// auto proj = annals::actors::spawn_projection(
///   sys, journal, std::make_shared<statements>(),
///   annals::actors::file_projection_options{.name = "statements", .directory = "/var/st"});
/// ```
///
/// **The directory.** It belongs to one projection. Besides the model files it holds
/// `.annals-offset` (the projection's offset), `.annals-lock` (see below) and, after a
/// crash, temporary files `.<name>.tmp` that the next start removes. Model file names are
/// chosen by the handler; names starting with `.` are reserved for these.
///
/// **Model files.** The first line of every model file is a header holding the offset of
/// the last event applied to that file, `{"annals_offset":N}` (a JSON line, so a JSON-lines
/// model stays JSON lines); the model's content follows. `read_model_file` reads both.
///
/// **How a batch is written.** The handler's writes (`file_batch::append_line`,
/// `file_batch::replace`) are staged in memory. After the batch, each changed file is
/// written whole to a temporary file in the directory, with the header of its newest
/// event, fsync'd and renamed over the model file; then the directory is fsync'd; then the
/// projection's offset is written the same way (temporary file, fsync, rename, directory
/// fsync).
///
/// **The guarantee (`delivery::exactly_once`, per file).** A rename replaces a file
/// atomically, so after a crash every file is either as it was before the batch or as the
/// batch left it, never torn; and each file's header says which events it holds. A crash
/// after some files were renamed but before the offset was stored replays the batch; the
/// projection then skips, for each file, the writes of events at or below that file's own
/// header offset. So each event's writes reach each file exactly once. The handler is called
/// again for such events (its writes to files that hold them already are dropped), so a
/// handler keeps its model's state in the files (read them with `file_batch::read`), not in
/// members.
///
/// **One writer.** `open` takes an advisory `flock` on `.annals-lock` for the life of the
/// sink: a second instance on the same directory (in this process or another) fails to
/// start with `projection_errc::read_model_failed` naming the directory. A stored offset
/// found moved (a writer that ignores the lock) stops the projection with
/// `projection_errc::offset_moved`.
///
/// **Rebuild.** `reset` stores offset 0 with a reset mark, removes every model file (files
/// with the header; other files are left alone), then clears the mark; a crash in between
/// finishes the removal at the next start.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <caf/expected.hpp>

#include "annals/actors/projection.hpp"
#include "annals/actors/projection_sink.hpp"
#include "annals/actors/typed_projection.hpp"

namespace annals::actors {

/// Checks a model file name: non-empty, at most 255 bytes, no `/`, no NUL, no `..`, not
/// starting with `.` (reserved for the sink's own files). Returns an error
/// (`projection_errc::read_model_failed`) whose text names the file and the rule it breaks.
[[nodiscard]] caf::error validate_file_name(std::string_view name);

/// The writes one batch makes to the model's files, as the handler sees them. Writes go to
/// memory; the sink writes the changed files after the batch (see the file comment).
///
/// ```cpp
/// files.append_line("acc-1.jsonl", R"({"balance":100})");
/// files.replace("summary.json", R"({"accounts":3})");
/// auto text = files.read("acc-1.jsonl");  // this batch's writes included
/// ```
///
/// A write to a file whose header shows it holds the current event already (a batch
/// replayed after a crash) is dropped. A bad file name throws `std::invalid_argument` naming
/// it (the projection stops with `handler_failed`); a model file that cannot be read throws
/// `std::runtime_error`.
class file_batch {
public:
  /// Appends `line` and a `\n` to file `name` (created if missing). `line` must not
  /// contain `\n`.
  void append_line(std::string_view name, std::string_view line);

  /// Sets the content of file `name` (created if missing) to `content`.
  void replace(std::string_view name, std::string_view content);

  /// The content of file `name` as this batch leaves it so far (without the header); empty
  /// if the file does not exist.
  [[nodiscard]] std::string read(std::string_view name);

  /// True if file `name` exists or this batch created it.
  [[nodiscard]] bool exists(std::string_view name);

  /// One changed or read file: its content and header offset as the batch sees them.
  struct file_state {
    std::uint64_t offset = 0; ///< the newest event the content holds
    std::string content;      ///< without the header
    bool present = false;     ///< the file exists (on disk or made by this batch)
    bool dirty = false;       ///< changed by this batch
  };

  /// For the sink: a batch of the model files in `directory`, applying the event at
  /// `offset` (see `begin_event`).
  explicit file_batch(std::string directory);

  /// For the sink: the event whose writes follow.
  void begin_event(std::uint64_t offset);

  /// For the sink: keeps the current event's writes (`commit`) or drops them.
  void end_event(bool commit);

  /// For the sink: the files the batch changed or read, by name.
  const std::map<std::string, file_state, std::less<>>& files() const noexcept {
    return files_;
  }

private:
  file_state& load(std::string_view name);
  file_state* writable(std::string_view name);

  std::string directory_;
  std::uint64_t current_ = 0;
  std::map<std::string, file_state, std::less<>> files_;
  // The files as they were before the current event's first write to them.
  std::map<std::string, file_state, std::less<>> undo_;
};

/// The read model of a files projection; subclass it (or `typed_file_projection`).
class file_projection_handler {
public:
  virtual ~file_projection_handler();

  /// Folds one event (one that passed the filter) into the files through `files`. Throwing
  /// stops the projection; this event's writes are dropped and the batch is written up to
  /// the event before.
  virtual void apply(file_batch& files, const persistence::event_record& rec) = 0;

  /// Called by a rebuild after the model files were removed; for a handler with state of
  /// its own. The default does nothing.
  virtual void reset();
};

/// The base of a typed files handler: `Derived` declares
/// `void on(const E&, const envelope&, file_batch&)` for the event types of `A` it folds
/// (typed_projection.hpp says what annals does for a typed handler).
template <class Derived, named_aggregate A>
class typed_file_projection : public file_projection_handler {
public:
  /// Decodes and dispatches one record to `Derived::on`.
  void apply(file_batch& files, const persistence::event_record& rec) final {
    detail::connection_on_caller<Derived, file_batch&> call{static_cast<Derived&>(*this), files};
    static_assert(
      detail::accepts_any<decltype(call)>(static_cast<typename A::event_type*>(nullptr)),
      "a typed_file_projection needs at least one public `void on(const E&, const "
      "annals::actors::envelope&, annals::actors::file_batch&)` for an event type E of the "
      "aggregate");
    detail::dispatch_typed<A>(rec, call);
  }
};

/// Options of `spawn_projection` for a files projection.
struct file_projection_options {
  /// Names the projection in status replies and errors.
  std::string name;
  /// The model's directory; created (one level) if missing.
  std::string directory;
  /// Which events reach the handler.
  event_filter filter = event_filter::all();
  /// Most events read from the journal per catch-up page (one batch each).
  std::size_t page_size = 512;
  /// Most live commits waiting in the projection's mailbox; see `projection_options`.
  std::size_t max_queued_batches = 1024;
  /// fsync each written file and the directory. Without it a crash of the process still
  /// leaves every file whole and consistent (renames are atomic); a power loss may not.
  bool fsync = true;
};

/// A sink that keeps `handler`'s model in `opts.directory`; for `spawn_projection` over a
/// sink, or to test the sink directly.
[[nodiscard]] std::shared_ptr<projection_sink>
make_file_sink(std::shared_ptr<file_projection_handler> handler, file_projection_options opts);

/// Starts a files projection of `journal` into `opts.directory`. Start-up errors (a
/// directory in use by another instance, an unreadable offset) show up as state `failed`
/// in the status, never as an exception.
projection spawn_projection(caf::actor_system& sys, persistence::journal_ptr journal,
                            std::shared_ptr<file_projection_handler> handler,
                            file_projection_options opts);

/// A model file as stored: the offset in its header and its content after it.
struct model_file {
  std::uint64_t offset = 0;
  std::string content;
};

/// Reads model file `name` in `directory`. Errors (`projection_errc::read_model_failed`,
/// naming the file): a bad name, a missing or unreadable file, a file without the header.
[[nodiscard]] caf::expected<model_file> read_model_file(const std::string& directory,
                                                        std::string_view name);

/// The offset the projection stored in `directory` (0 if none).
[[nodiscard]] caf::expected<std::uint64_t> read_stored_offset(const std::string& directory);

} // namespace annals::actors
