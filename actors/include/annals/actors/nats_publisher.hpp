#pragma once

/// @file
/// Publishing public domain events to NATS (library `annals::actors_nats`, built with the
/// JetStream journal; links libnats): a projection sink that translates each batch of
/// committed events with a `public_contract` and publishes the messages, in log order, to
/// `<subject_prefix>.<type>` (by default `<source>.public.<type>`, e.g.
/// `bank.public.payments.AccountCredited`).
///
/// ```cpp
/// auto sink = annals::actors::make_nats_publisher(
///   bank::public_contract(), {.servers = "nats://127.0.0.1:4222", .offsets_path = "bank.db"});
/// auto proj = annals::actors::spawn_projection(sys, journal, *sink, {.name = "publisher"});
/// ```
///
/// Each message: body `to_json(msg)` (public_events.hpp), headers `Nats-Msg-Id: <msg.id>`
/// (`<source>:<journal offset>`, the same on every retry), `Annals-Position: <offset>`,
/// `Annals-Type: <type>` and `Annals-Version: <version>`. Events the contract does not map
/// are not published; the offset still advances over them.
///
/// Two modes:
/// - `nats_publish_mode::jetstream` (the default): into a stream (default name
///   `<source>_public`, subjects `<subject_prefix>.>`, file storage, `replicas` copies),
///   created if missing and used as it is if present. Up to `max_in_flight` messages in
///   flight; a batch is published once the server acknowledged every message (a duplicate
///   `Nats-Msg-Id` counts: it is stored); consumers that were away catch up from it.
/// - `nats_publish_mode::core`: plain publishes and a flush (the server has them). Nothing
///   is stored: a subscriber that is not connected then never sees the message; for
///   consumers that only want live notifications.
///
/// Offset: in the table `projection_offsets` of the SQLite file `offsets_path`, under the
/// projection's `name` (`sqlite_offset_store`; it may be the file of the read models). It
/// advances only after every message of a batch was acknowledged (jetstream) or flushed
/// (core), through a compare-and-set from the offset this instance left: a second
/// instance on the same offset stops with `projection_errc::offset_moved`, and one that
/// finds the stored offset moved before a batch publishes nothing of it.
///
/// Guarantee: `delivery::at_least_once`. A crash after the acknowledgement and before the
/// offset is stored publishes the messages since the stored offset again, with the same
/// ids. JetStream drops those repeats within the stream's duplicate window (acknowledging
/// them as duplicates); past it, and in core mode, consumers de-duplicate by `Nats-Msg-Id`.
///
/// Order: log order on one connection. A publish that fails while later ones of its window
/// were stored (a reconnect, a new stream leader) is resent after them; `max_in_flight = 1`
/// rules that out at one round trip per message.
///
/// Failures: an unreachable server or a failed publish is retried from the first message
/// not acknowledged, with a growing pause, for up to `retry_for`; then the projection
/// fails with `projection_errc::read_model_failed` naming the subject and the NATS error
/// text, and the stored offset stays at the last batch acknowledged in full. A record of a
/// mapped type that does not decode stops the projection with the contract's error (it
/// names the stream and the sequence number) after the messages before it were published.
///
/// A reset (rebuild) stores offset 0: every event is published again, with its old id.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <caf/expected.hpp>

#include "annals/actors/projection_sink.hpp"
#include "annals/actors/public_events.hpp"

namespace annals::actors {

/// Where published messages go; see the file comment.
enum class nats_publish_mode : std::uint8_t {
  jetstream, ///< into a stream, each message acknowledged by the server
  core,      ///< plain publishes and a flush; nothing stored
};

/// Options of `make_nats_publisher`; meant for designated initializers.
struct nats_publisher_options {
  /// The projection's name: the key of its stored offset, and named in errors.
  std::string name = "publisher";
  /// NATS servers, comma-separated: `nats://HOST:PORT[,nats://HOST:PORT...]`.
  std::string servers = "nats://127.0.0.1:4222";
  /// The SQLite file that keeps the offset (required; created if missing).
  std::string offsets_path;
  nats_publish_mode mode = nats_publish_mode::jetstream;
  /// Subjects are `<subject_prefix>.<type>`; empty: `<source>.public`.
  std::string subject_prefix;
  /// The JetStream stream; empty: `<source>_public` (characters a stream name cannot hold
  /// become `_`).
  std::string stream;
  /// Copies of a stream this publisher creates (1, or 3 on a three-server cluster).
  int replicas = 1;
  /// The duplicate window of a stream this publisher creates (0: the server's default,
  /// two minutes).
  std::chrono::milliseconds duplicate_window{0};
  /// Most JetStream publishes waiting for their acknowledgement at once.
  std::size_t max_in_flight = 256;
  /// How long each wait for acknowledgements (or a flush) may take; a connection attempt
  /// takes at most this or 1 s, whichever is less, and is repeated as `retry_for` allows.
  std::chrono::milliseconds request_timeout{5'000};
  /// How long a batch keeps retrying a lost server or a failed publish before the
  /// projection fails (`open` waits as long for a first connection).
  std::chrono::milliseconds retry_for{10'000};
  /// If set: called for each acknowledged JetStream publish with the message's position and
  /// whether the server had it already (a duplicate id). On a thread of the NATS client.
  std::function<void(std::uint64_t position, bool duplicate)> on_acknowledged;
  /// If set: called for each failed attempt to publish (before the pause and the retry)
  /// with the id and subject of the first message not acknowledged and the NATS error
  /// text; for logs and metrics. On the projection's thread.
  std::function<void(const std::string& id, const std::string& subject, const std::string& error)>
    on_publish_failed;
  /// If set: called once every message of a batch was acknowledged (or flushed) and before
  /// its last offset is stored. For crash tests; on the projection's thread.
  std::function<void(std::uint64_t last_offset)> before_offset_stored;
};

/// A sink that publishes what `contract` maps; see the file comment. Fails with
/// `projection_errc::read_model_failed` for options that cannot work (no `offsets_path`,
/// replicas outside 1..5) and `offset_store_failed` when the offset file cannot be opened.
/// The connection is made in the sink's `open`, so an unreachable server shows up as the
/// projection's state `failed`.
caf::expected<std::shared_ptr<projection_sink>> make_nats_publisher(public_contract contract,
                                                                    nats_publisher_options opts);

/// Reads `nats://HOST:PORT[,HOST:PORT...][?stream=NAME&replicas=N&mode=core|jetstream]`
/// into `base`'s `servers`, `stream`, `replicas` and `mode` (the command-line form of
/// annals-bank's `--publish`). Fails with `projection_errc::read_model_failed` naming what
/// is wrong.
///
/// ```cpp
/// auto o = annals::actors::parse_nats_publish_url("nats://a:4222,b:4222?replicas=3", {});
/// // o->servers == "nats://a:4222,nats://b:4222", o->replicas == 3
/// ```
caf::expected<nats_publisher_options> parse_nats_publish_url(std::string_view url,
                                                             nats_publisher_options base);

/// The subject a message of public type `type` goes to under `prefix`: `<prefix>.<type>`.
std::string nats_subject(std::string_view prefix, std::string_view type);

} // namespace annals::actors
