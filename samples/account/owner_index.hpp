#pragma once

// The owner index: finds accounts by their owner's name. An in-memory, at-least-once read
// model: it remembers the last offset it applied and skips anything at or below it, so a
// redelivered batch changes nothing. The projection's thread writes it; any thread may
// search it.
//
// It folds account events only (events of other aggregates are skipped); an account event
// that does not decode stops the projection, before its offset counts as applied.

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "account/account.hpp"
#include "annals/actors/typed_projection.hpp"

namespace bank {

/// One account found by `owner_index::search`.
struct owner_hit {
  std::string account_id;
  std::string owner;
  bool closed = false; // closed accounts stay searchable

  friend bool operator==(const owner_hit&, const owner_hit&) = default;
};

class owner_index : public annals::actors::typed_projection<owner_index, account> {
public:
  // Every account event moves the offset; only opened and closed change the index.
  template <class E>
  void on(const E& e, const annals::actors::envelope& env) {
    std::unique_lock guard{mtx_};
    if (env.offset() <= offset_)
      return;
    offset_ = env.offset();
    index(std::string{env.entity_id()}, e);
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

  void index(const std::string& id, const opened& e) {
    accounts_[id] = entry{e.owner, fold(e.owner), false};
  }
  void index(const std::string& id, const closed&) {
    if (auto i = accounts_.find(id); i != accounts_.end())
      i->second.closed = true;
  }
  void index(const std::string&, const deposited&) {}
  void index(const std::string&, const withdrawn&) {}

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
