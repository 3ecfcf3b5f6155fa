#pragma once

// The stored form of one append on JetStream (one message) and of one snapshot, and the
// subject names. Written once here; the journal, its tests and tools use these.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

#include "annals/persistence/audit.hpp"
#include "annals/persistence/journal.hpp"

namespace annals::persistence::jetstream {

/// One append as stored: the body of one JetStream message. Binary, little-endian:
///   "ANJ1" | u64 first_seq | i64 timestamp_us | str id | str command_id | str correlation_id
///   | u32 n | n x (str name | u32 version | str payload | u32 k | k x str tag) | 32-byte hash
/// where `str` is a u32 length and the bytes. `hash` is the persistence id's chain value
/// after the last event of this append (`internal::chain_hash` with offset 0: the chain
/// is per id, see docs/jetstream.md).
struct envelope {
  std::uint64_t first_seq = 0;
  std::int64_t timestamp_us = 0;
  std::string persistence_id;
  event_metadata metadata;
  std::vector<encoded_event> events;
  event_hash hash{};

  std::uint64_t last_seq() const noexcept {
    return first_seq + events.size() - 1;
  }
};

std::string encode(const envelope& env);

/// Fails with `journal_errc::corrupt_row` naming `where` (e.g. the stream sequence).
caf::expected<envelope> decode_envelope(std::string_view bytes, const std::string& where);

/// The chain value after the events of `env`, starting from `previous`.
event_hash chain(const event_hash& previous, const envelope& env);

/// The records of an envelope stored at `stream_seq`, offsets included.
std::vector<event_record> records_of(envelope env, std::uint64_t stream_seq);

/// A snapshot as stored: "ANS1" | u64 seq | u32 version | i64 timestamp_us | str id
/// | str name | str payload.
std::string encode(const snapshot_record& snap);
caf::expected<snapshot_record> decode_snapshot(std::string_view bytes, const std::string& where);

/// Subject names of one journal.
struct subjects {
  std::string stream;          ///< events stream, e.g. ANNALS
  std::string snapshot_stream; ///< ANNALS_SNAPSHOTS

  std::string events_filter() const {
    return stream + ".e.*";
  }
  std::string snapshots_filter() const {
    return stream + ".s.*";
  }
  std::string events(std::string_view persistence_id) const;
  std::string snapshots(std::string_view persistence_id) const;
};

} // namespace annals::persistence::jetstream
