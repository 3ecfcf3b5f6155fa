#pragma once

/// @file
/// The name of one event stream: an aggregate type plus an entity id.
///
/// Every event an aggregate persists is stored under its persistence id. On disk (and on
/// the wire of every journal) the id is the text `type|entity`, e.g. `account|acc-ada`:
/// this header is the one place that builds and splits that text, so the separator is
/// written once. The aggregate type never holds the separator (the host refuses such a
/// type name); the entity id may hold anything, the separator included, because the text
/// is split at the *first* separator.
///
/// ```cpp
/// annals::persistence_id pid{"account", "acc-ada"};
/// journal->append(pid.str(), expected_seq, events, ...);
///
/// if (auto parsed = annals::persistence_id::parse(rec.persistence_id))
///   use(parsed->type(), parsed->entity_id());
/// ```

#include <compare>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace annals {

/// An aggregate type and an entity id, stored as `type|entity`.
class persistence_id {
public:
  /// Separates the aggregate type from the entity id in the stored text.
  static constexpr char separator = '|';

  /// The id of entity `entity_id` of aggregate type `type`. `type` must not hold
  /// `separator` (not checked here; the host refuses such type names when registering).
  persistence_id(std::string_view type, std::string_view entity_id) {
    text_.reserve(type.size() + 1 + entity_id.size());
    text_.append(type).append(1, separator).append(entity_id);
    split_ = type.size();
  }

  /// Splits stored text at its first separator; nullopt if it holds none or the type part
  /// is empty (a stream that no aggregate wrote, e.g. one appended by hand).
  static std::optional<persistence_id> parse(std::string_view text) {
    auto bar = text.find(separator);
    if (bar == std::string_view::npos || bar == 0)
      return std::nullopt;
    return persistence_id{text, bar};
  }

  /// The entity part of stored text (`acc-ada` for `account|acc-ada`), or the whole text
  /// when it holds no separator. For read models that key rows by entity id.
  static std::string_view entity_of(std::string_view text) noexcept {
    auto bar = text.find(separator);
    return bar == std::string_view::npos ? text : text.substr(bar + 1);
  }

  /// The prefix every persistence id of aggregate type `type` starts with (`account|`).
  static std::string prefix_of(std::string_view type) {
    std::string out;
    out.reserve(type.size() + 1);
    out.append(type).append(1, separator);
    return out;
  }

  std::string_view type() const noexcept {
    return std::string_view{text_}.substr(0, split_);
  }

  std::string_view entity_id() const noexcept {
    return std::string_view{text_}.substr(split_ + 1);
  }

  /// The stored form, `type|entity`.
  const std::string& str() const noexcept {
    return text_;
  }

  friend bool operator==(const persistence_id& a, const persistence_id& b) noexcept {
    return a.text_ == b.text_;
  }
  friend std::strong_ordering operator<=>(const persistence_id& a,
                                          const persistence_id& b) noexcept {
    return a.text_.compare(b.text_) <=> 0;
  }

private:
  persistence_id(std::string_view text, std::size_t split) : text_(text), split_(split) {}

  std::string text_;
  std::size_t split_ = 0;
};

} // namespace annals
