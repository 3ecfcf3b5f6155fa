#pragma once

/// @file
/// Decoding stored rows with an event codec, so that a bad row names where it lives.
///
/// Journals return raw `event_record`s; what a payload means is the codec's business. A
/// row whose payload is not valid JSON, whose name the codec does not know, or whose
/// version is newer than the code fails to decode, and the error must say which row:
///
/// ```cpp
/// using codec = annals::event_codec<bank::deposited, bank::withdrawn>;
/// auto ev = annals::persistence::decode_record(codec{}, rec);
/// if (!ev)  // annals.unknown_event: persistence id account|acc-1, seq 3 (offset 17): ...
///   std::cerr << annals::render(ev.error()) << '\n';
/// ```
///
/// The error keeps the codec's own code (`annals::errc::decode_failed`, `unknown_event`
/// or `newer_version`), because callers react differently to each (a newer version asks
/// for an upgrade, not a repair); only its context changes, to
/// `persistence id <id>, seq <n> (offset <o>): <the codec's context>`.

#include <string>
#include <string_view>

#include <caf/error.hpp>
#include <caf/make_message.hpp>

#include "annals/error.hpp"
#include "annals/persistence/journal.hpp"

namespace annals::persistence {

/// Prefixes the context of `err` with `where`, keeping its category and code.
inline caf::error locate_error(const caf::error& err, const std::string& where) {
  auto cause = context_of(err);
  if (cause.empty())
    cause = code_name(err);
  return caf::error{err.code(), err.category(), caf::make_message(where + ": " + cause)};
}

/// The error of a replay that meets a stored event it cannot decode (recovery, the
/// recompute of a duplicate's reply, `replay_state`): `journal.corrupt_row`, naming the
/// persistence id and sequence number, with the codec's error rendered after them.
inline caf::error corrupt_event(std::string_view persistence_id, std::uint64_t seq,
                                const caf::error& cause) {
  return make_error(journal_errc::corrupt_row, "persistence id " + std::string{persistence_id}
                                                 + ", seq " + std::to_string(seq) + ": "
                                                 + render(cause));
}

/// Decodes `rec` with `codec.decode(name, version, payload)`; on failure returns the
/// codec's error with a context naming the persistence id, sequence number and offset.
template <class Codec>
auto decode_record(const Codec& codec, const event_record& rec)
  -> decltype(codec.decode(std::string_view{}, std::uint32_t{}, std::string_view{})) {
  auto result = codec.decode(rec.name, rec.version, rec.payload);
  if (!result)
    return locate_error(result.error(), "persistence id " + rec.persistence_id + ", seq "
                                          + std::to_string(rec.seq) + " (offset "
                                          + std::to_string(rec.offset) + ")");
  return result;
}

/// Decodes a snapshot with a single-type codec (e.g. `annals::type_codec<State>`, which
/// has `name()` and `from_json(version, payload)`); on failure returns the codec's error
/// (or `annals::errc::unknown_event` if the stored name differs) with a context naming
/// the persistence id and sequence number. Callers skip such a snapshot and try the next.
template <class Codec>
auto decode_snapshot(const Codec& codec, const snapshot_record& snap)
  -> decltype(codec.from_json(std::uint32_t{}, std::string_view{})) {
  auto where =
    "snapshot of persistence id " + snap.persistence_id + " at seq " + std::to_string(snap.seq);
  if (std::string_view{snap.name} != std::string_view{codec.name()})
    return make_error(errc::unknown_event, where + ": stored as '" + snap.name + "', expected '"
                                             + std::string{codec.name()} + "'");
  auto result = codec.from_json(snap.version, snap.payload);
  if (!result)
    return locate_error(result.error(), where);
  return result;
}

} // namespace annals::persistence
