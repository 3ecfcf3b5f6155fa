#pragma once

/// @file
/// Tamper evidence: the hash chain over a journal's events.
///
/// Every event a `sqlite_journal` stores carries `hash = SHA-256(previous hash || event)`,
/// where "event" is a length-prefixed encoding of everything a reader gets back (offset,
/// persistence id, seq, name, version, payload, tags, commit time, command and correlation
/// ids) and the previous hash of the first event is 32 zero bytes. Changing, removing or
/// reordering any stored event therefore breaks the chain at that event, and
/// `sqlite_journal::verify` names the first one that does not match:
///
/// ```cpp
/// auto report = annals::persistence::sqlite_journal::verify("bank.db");
/// if (report && report->first_break)
///   std::cerr << "tampered at offset " << report->first_break->offset << ": "
///             << report->first_break->reason << '\n';
/// ```
///
/// The chain proves integrity against edits of the file, not authorship: whoever can
/// rewrite the whole file can recompute the whole chain. Publishing the head hash
/// (`verify_report::head_hash`) somewhere else pins the history up to that point.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "annals/persistence/journal.hpp"

namespace annals::persistence {

/// A SHA-256 digest.
using event_hash = std::array<std::uint8_t, 32>;

/// The hash of `rec` chained to `previous` (all zeros before the first event).
event_hash chain_hash(const event_hash& previous, const event_record& rec);

/// Lower-case hex of a digest.
std::string to_hex(const event_hash& h);

/// Parses 64 hex digits; nothing for anything else.
std::optional<event_hash> hash_from_hex(std::string_view hex);

/// The first event whose stored hash does not match.
struct chain_break {
  std::uint64_t offset = 0;
  std::string persistence_id;
  std::uint64_t seq = 0;
  std::string reason; ///< e.g. "stored hash 3f2a... differs from the recomputed 9b41..."
};

/// What `sqlite_journal::verify` found.
struct verify_report {
  std::uint64_t events_checked = 0; ///< events up to and including the break, or all
  std::uint64_t head_offset = 0;    ///< the highest offset in the file
  event_hash head_hash{};           ///< the chain's value after the last event checked
  std::optional<chain_break> first_break;
};

namespace internal {

/// The digest of one event given its fields; what `chain_hash` and the journal's writer
/// both compute.
event_hash chain_hash(const event_hash& previous, std::uint64_t offset,
                      std::string_view persistence_id, std::uint64_t seq, std::string_view name,
                      std::uint32_t version, std::string_view payload,
                      const std::vector<std::string>& tags, std::int64_t timestamp_us,
                      std::string_view command_id, std::string_view correlation_id);

} // namespace internal

} // namespace annals::persistence
