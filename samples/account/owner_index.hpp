#pragma once

// The owner index: finds accounts by their owner's name. An in-memory, at-least-once read
// model: it remembers the last offset it applied and skips anything at or below it, so a
// redelivered batch changes nothing. The projection's thread writes it; any thread may
// search it.
//
// Spawn it with `event_filter::aggregate_type("account")`: an event that is not an account
// event does not decode and stops the projection.

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "account/account.hpp"
#include "annals/actors/projection.hpp"
#include "annals/error.hpp"

namespace bank {

/// One account found by `owner_index::search`.
struct owner_hit {
  std::string account_id;
  std::string owner;
  bool closed = false; // closed accounts stay searchable

  friend bool operator==(const owner_hit&, const owner_hit&) = default;
};

class owner_index : public annals::actors::projection_handler {
public:
  void apply(const annals::persistence::event_record& rec) override {
    std::unique_lock guard{mtx_};
    if (rec.offset <= offset_)
      return;
    // Decoded before the offset moves: an event that does not decode stops the projection
    // and does not count as applied.
    auto ev = account::codec_type::decode(rec.name, rec.version, rec.payload);
    if (!ev)
      throw std::runtime_error{annals::render(ev.error())};
    offset_ = rec.offset;
    auto id = rec.persistence_id.substr(rec.persistence_id.find('|') + 1);
    std::visit([&](const auto& e) { on(id, e); }, *ev);
  }

  void reset() override {
    std::unique_lock guard{mtx_};
    accounts_.clear();
    offset_ = 0;
  }

  /// The accounts whose owner's name contains `query`, ignoring ASCII case (an empty query
  /// matches every owner), sorted by account id; at most `limit`, the first by id.
  std::vector<owner_hit> search(std::string_view query, std::size_t limit = 50) const {
    auto needle = fold(query);
    std::vector<owner_hit> hits;
    std::shared_lock guard{mtx_};
    for (const auto& [id, acc] : accounts_) {
      if (hits.size() >= limit)
        break;
      if (acc.folded.find(needle) != std::string::npos)
        hits.push_back(owner_hit{id, acc.owner, acc.closed});
    }
    return hits;
  }

  /// The offset of the last event applied (0 before the first).
  std::uint64_t offset() const {
    std::shared_lock guard{mtx_};
    return offset_;
  }

private:
  struct entry {
    std::string owner;
    std::string folded; // `owner` in ASCII lower case, for matching
    bool closed = false;
  };

  void on(const std::string& id, const opened& e) {
    accounts_[id] = entry{e.owner, fold(e.owner), false};
  }
  void on(const std::string& id, const closed&) {
    if (auto i = accounts_.find(id); i != accounts_.end())
      i->second.closed = true;
  }
  void on(const std::string&, const deposited&) {}
  void on(const std::string&, const withdrawn&) {}

  // ASCII letters to lower case; other bytes (UTF-8 included) stay as they are.
  static std::string fold(std::string_view s) {
    std::string out{s};
    for (auto& c : out)
      if (c >= 'A' && c <= 'Z')
        c = static_cast<char>(c - 'A' + 'a');
    return out;
  }

  mutable std::shared_mutex mtx_;
  std::map<std::string, entry> accounts_; // by account id
  std::uint64_t offset_ = 0;
};

} // namespace bank
