#pragma once

/// @file
/// Public domain events: the stable messages a service gives other bounded contexts,
/// apart from the internal events its aggregates keep to rebuild their state.
///
/// Internal events are a storage format that the service may change (rename a field, split
/// an event, upcast old rows); consumers in other services must not depend on them. A
/// `public_contract` declares which internal event types become which public messages, each
/// with its own name and version, through one translation function per event type. Events
/// without a translation are not published.
///
/// ```cpp
/// annals::actors::public_contract contract{"bank"};
/// contract.map<bank::account, bank::deposited>(
///   "payments.AccountCredited", 1,
///   [](const bank::deposited& e, const annals::actors::envelope& env) {
///     return boost::json::object{{"account", env.entity_id()}, {"amount", e.cents},
///                                {"currency", "EUR"}};
///   });
///
/// for (auto& rec : records)                  // committed records, in offset order
///   if (auto msg = contract.translate(rec); !msg)
///     ...                                    // a mapped event that does not decode
///   else if (*msg)
///     send(to_json(**msg));                  // {"id":"bank:17","position":17,...}
/// ```
///
/// A translated message keeps the journal offset of its event as its `position` and gets
/// the id `<source>:<position>`: the same on every retry of the same event, so a consumer
/// de-duplicates by id and resumes after the last position it handled. Messages with the
/// same `key` (the aggregate's id unless the translation sets another) are in log order.
///
/// Translation reads committed records only (a projection, or a journal read): a message is
/// never published for an event that was not committed, without an outbox table.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/json/object.hpp>
#include <caf/expected.hpp>

#include "annals/actors/typed_projection.hpp"
#include "annals/named_aggregate.hpp"
#include "annals/persistence/journal.hpp"

namespace annals::actors {

/// A translated public message with where it came from.
struct published_message {
  /// Stable id, `<source>:<position>`; the same on every retry (NATS `Nats-Msg-Id`).
  std::string id;
  /// The journal offset of the event it was translated from; feeds resume after it.
  std::uint64_t position = 0;
  /// The public name, e.g. `payments.AccountCredited` (not the internal event's name).
  std::string type;
  /// The version of the public message type, independent of the internal event's version.
  std::uint32_t version = 1;
  /// Ordering key: messages with the same key are in log order. The aggregate's id unless
  /// the translation chose another.
  std::string key;
  /// When the event was committed, microseconds since the Unix epoch.
  std::int64_t occurred_at_us = 0;
  /// The message body, a JSON object.
  boost::json::object data;

  friend bool operator==(const published_message&, const published_message&) = default;
};

/// One public message type of a contract, for listings and docs.
struct public_message_type {
  std::string type;           ///< public name
  std::uint32_t version = 1;  ///< public version
  std::string aggregate;      ///< the aggregate type whose events it comes from
  std::string internal_event; ///< the internal event name it is translated from
};

/// What a translation function may return: the body, or the body with an ordering key
/// other than the aggregate's id. `std::nullopt` skips that one event.
struct public_body {
  boost::json::object data;
  std::string key; ///< empty: the aggregate's id
};

/// Which internal events become which public messages; see the file comment.
class public_contract {
public:
  /// `source` names the publishing service; it prefixes every message id (`bank:17`).
  explicit public_contract(std::string source);

  /// Publishes events `E` of aggregate `A` as public messages `type` at `version`.
  /// `f(const E&, const envelope&)` returns a `boost::json::object` (the body), a
  /// `public_body` (body and key), or an `std::optional` of either (`nullopt` skips the
  /// event). One translation per internal event type; a second `map` for the same `E`
  /// replaces the first.
  template <named_aggregate A, class E, class F>
  public_contract& map(std::string type, std::uint32_t version, F f) {
    static_assert(std::is_invocable_v<F&, const E&, const envelope&>,
                  "the translation takes (const E&, const annals::actors::envelope&)");
    std::string aggregate{aggregate_name<A>()};
    std::string internal{E::name};
    types_.push_back({type, version, aggregate, internal});
    translators_[aggregate + '\n' + internal] =
      [type, version, f = std::move(f)](const persistence::event_record& rec)
      -> std::optional<std::pair<public_body, std::pair<std::string, std::uint32_t>>> {
      std::optional<public_body> out;
      detail::dispatch_typed<A>(rec, [&](const auto& e, const envelope& env) {
        if constexpr (std::is_same_v<std::decay_t<decltype(e)>, E>)
          out = to_body(f(e, env), env);
      });
      if (!out)
        return std::nullopt;
      return std::pair{std::move(*out), std::pair{type, version}};
    };
    return *this;
  }

  /// The message for `rec`: `std::nullopt` when its event type is not mapped (or the
  /// translation skipped it); an error (`journal.corrupt_row`, naming the persistence id
  /// and sequence number) when its type is mapped but the record does not decode, or
  /// `projection.handler_failed` when the translation throws.
  caf::expected<std::optional<published_message>>
  translate(const persistence::event_record& rec) const;

  /// `translate` for each record, in order, keeping the mapped ones; stops at the first
  /// error.
  caf::expected<std::vector<published_message>>
  translate(std::span<const persistence::event_record> records) const;

  /// The service name that prefixes message ids.
  const std::string& source() const noexcept {
    return source_;
  }

  /// The message types declared, in declaration order.
  const std::vector<public_message_type>& types() const noexcept {
    return types_;
  }

  /// The id of the message translated from the event at `position`: `<source>:<position>`.
  std::string message_id(std::uint64_t position) const;

private:
  using translated = std::pair<public_body, std::pair<std::string, std::uint32_t>>;

  static public_body to_body(boost::json::object data, const envelope&) {
    return public_body{std::move(data), {}};
  }
  static public_body to_body(public_body body, const envelope&) {
    return body;
  }
  template <class T>
  static std::optional<public_body> to_body(std::optional<T> v, const envelope& env) {
    if (!v)
      return std::nullopt;
    return to_body(std::move(*v), env);
  }

  std::string source_;
  std::vector<public_message_type> types_;
  /// By `aggregate \n internal event name`.
  std::map<std::string, std::function<std::optional<translated>(const persistence::event_record&)>,
           std::less<>>
    translators_;
};

/// The wire form of a message, one JSON object:
/// `{"id":"bank:17","position":17,"type":"payments.AccountCredited","version":1,
///   "key":"acc-1","occurred_at":"2026-12-02T10:00:00.123456Z","data":{...}}`.
/// The same text goes to NATS (as the message body) and to HTTP feeds.
std::string to_json(const published_message& msg);

/// Parses the wire form back (for consumers); an error names the missing or mistyped field.
caf::expected<published_message> parse_published(std::string_view json);

/// `occurred_at` as written by `to_json`: RFC 3339 in UTC with microseconds.
std::string format_utc(std::int64_t timestamp_us);

} // namespace annals::actors
