#pragma once

/// @file
/// The journal contract on NATS JetStream: a log replicated by Raft (R3 keeps three copies
/// and one elected stream leader orders every append), in its own library target
/// (`annals::jetstream`, built when libnats is found) so that programs without NATS do not
/// link it.
///
/// ```cpp
/// using namespace annals::persistence;
/// auto journal = jetstream_journal::open({.servers = "nats://10.0.0.1:4222,nats://10.0.0.2:4222",
///                                         .stream = "BANK", .replicas = 3});
/// if (!journal)
///   return fail(annals::render(journal.error())); // journal.unavailable: cannot reach ...
/// auto snapshots = (*journal)->snapshots();
/// ```
///
/// Layout (docs/jetstream.md has the details and the reasons):
/// - One stream `STREAM` with subjects `STREAM.e.*`; one subject per persistence id, the id
///   encoded by `subject_token` so that dots, wildcards, spaces and any other byte cannot
///   break the subject. Deleting and purging are denied on the stream (append-only).
/// - One append is one message (an envelope holding all its events): all or none.
/// - Optimistic concurrency: each publish carries `Nats-Expected-Last-Subject-Sequence`
///   (the stream sequence of the id's last message, which the journal remembers per id);
///   JetStream's refusal (error 10071) becomes `journal_errc::conflict` after a fresh look
///   at the id's last message confirms that the caller's expected seq is stale.
/// - Each publish carries a `Nats-Msg-Id` chosen once per append; an append whose
///   acknowledgement does not arrive is published again with the same id, and the server
///   drops the duplicate inside its duplicate window, so a retried append is stored once.
/// - Global offsets are `stream sequence * offsets_per_append + index in the append`:
///   strictly increasing, consecutive within an append, derived from the stored log alone
///   (any node computes the same offset for an event), but not gapless across appends.
/// - Snapshots live in a second stream `STREAM_SNAPSHOTS` (subjects `STREAM.s.*`) that keeps
///   the newest `keep_snapshots` messages per subject.
///
/// An acknowledgement means the stream leader stored the append and, for R3, a majority of
/// the replicas have it. nats-server 2.9 acknowledges before fsync: a killed process loses
/// nothing acknowledged (the page cache survives), a power loss of a majority can.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "annals/persistence/audit.hpp"
#include "annals/persistence/journal.hpp"

namespace annals::persistence {

/// Where and how a `jetstream_journal` stores its log.
struct jetstream_options {
  /// Comma-separated server URLs; the client reconnects among them.
  std::string servers = "nats://127.0.0.1:4222";
  /// The stream's name (letters, digits, `-` and `_`); also the subjects' first token.
  std::string stream = "ANNALS";
  /// Copies of each message: 1 (one server) or 3 (a cluster that survives one failure).
  int replicas = 1;
  /// Snapshots kept per persistence id.
  std::size_t keep_snapshots = 2;
  /// See `default_max_append_bytes`. The servers' `max_payload` must leave room for it plus
  /// the envelope; an append whose envelope exceeds it fails with `too_large`.
  std::size_t max_append_bytes = default_max_append_bytes;
  /// One attempt of a request (a publish, a read) before it is retried or fails.
  std::chrono::milliseconds request_timeout{2'000};
  /// All attempts of one append; past it the append fails with `journal_errc::unavailable`.
  /// Kept below `duplicate_window` so that every retry is still de-duplicated.
  std::chrono::milliseconds append_timeout{30'000};
  /// The stream's duplicate window (JetStream's `duplicate_window`).
  std::chrono::milliseconds duplicate_window{120'000};
  /// Waiting at `open` for a reachable server and a stream leader.
  std::chrono::milliseconds open_timeout{10'000};
};

/// The options named by a journal URI, the form the operator tool and the benchmarks take:
///
///   nats://HOST:PORT[,HOST:PORT...][?stream=NAME&replicas=N]
///
/// Each `HOST:PORT` becomes one server URL; `stream` (default `ANNALS`) and `replicas`
/// (1 to 5, default 1) set the fields of the same names; the others keep their defaults.
/// `parse_jetstream_uri("nats://10.0.0.1:4222,10.0.0.2:4222?stream=BANK&replicas=3")` gives
/// servers `nats://10.0.0.1:4222,nats://10.0.0.2:4222`, stream `BANK`, replicas 3. Fails with
/// `journal_errc::invalid_request` naming what is wrong (another scheme, an empty server, an
/// unknown parameter, a stream name JetStream refuses).
caf::expected<jetstream_options> parse_jetstream_uri(std::string_view uri);

/// A journal on NATS JetStream; see the file comment.
///
/// Operations run on the journal's own threads (one for appends, one for reads and
/// snapshots); callbacks and commit listeners run there too. Commit listeners follow the
/// stream itself through an ordered consumer, so they see the appends of every process
/// that writes to the stream, in stream order, from the moment `subscribe` returns.
class jetstream_journal final : public journal {
public:
  /// Offsets of one append are `stream sequence * offsets_per_append + i`; an append holds
  /// fewer events than this (its size bound makes more impossible anyway).
  static constexpr std::uint64_t offsets_per_append = 1'000'000;

  /// Connects, then creates the streams or checks that existing ones have this journal's
  /// settings. Fails with `journal_errc::unavailable` when no server answers within
  /// `open_timeout`, and with `journal_errc::not_a_journal` naming each differing setting
  /// when a stream of that name exists with other settings (it is left unchanged).
  static caf::expected<std::shared_ptr<jetstream_journal>> open(jetstream_options opts);

  ~jetstream_journal() override;
  jetstream_journal(const jetstream_journal&) = delete;
  jetstream_journal& operator=(const jetstream_journal&) = delete;

  void append(append_request req, callback<append_result> done) override;
  void read_stream(std::string persistence_id, std::uint64_t from_seq, std::uint64_t to_seq,
                   std::size_t max, callback<std::vector<event_record>> done) override;
  void read_all(std::uint64_t from_offset, std::size_t max,
                callback<std::vector<event_record>> done) override;
  /// Scans the stream from `from_offset` and filters on the client: JetStream indexes
  /// subjects, not tags.
  void read_tagged(std::string tag, std::uint64_t from_offset, std::size_t max,
                   callback<std::vector<event_record>> done) override;
  void highest_seq(std::string persistence_id, callback<std::uint64_t> done) override;
  void head_offset(callback<std::uint64_t> done) override;
  void persistence_ids(std::string after, std::size_t max,
                       callback<std::vector<std::string>> done) override;
  std::uint64_t subscribe(commit_listener f) override;
  void unsubscribe(std::uint64_t handle) override;

  /// The snapshot store in `STREAM_SNAPSHOTS`.
  snapshot_store_ptr snapshots();

  /// Recomputes the hash chain of every persistence id (a chain per id: the stream leader
  /// orders appends of different ids, so no writer can chain them globally) and names the
  /// first event whose stored hash differs. Blocks the calling thread.
  caf::expected<verify_report> verify();

  /// Finishes what was submitted, then disconnects; later calls fail with `closed`.
  void close();

  /// The options this journal runs with.
  const jetstream_options& options() const noexcept;

  struct impl;

private:
  explicit jetstream_journal(std::shared_ptr<impl> p);
  caf::expected<std::vector<std::string>> wait_ids();
  std::shared_ptr<impl> impl_;
};

/// The subject token of a persistence id: bytes `[A-Za-z0-9_-]` stay, every other byte
/// becomes `=XX` (two upper-case hex digits), so `account|a.b c` gives `account=7Ca=2Eb=20c`.
std::string subject_token(std::string_view persistence_id);

/// The persistence id of a subject token, or nothing if `token` is not one `subject_token`
/// makes.
std::optional<std::string> persistence_id_of(std::string_view token);

} // namespace annals::persistence
