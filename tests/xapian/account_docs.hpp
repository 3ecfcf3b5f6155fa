#pragma once

// The Xapian test model: one document per bank account holding its owner, whether it is
// closed, its balance and how many of its events were applied, so that an event applied
// twice or not at all shows in the document; and the same fold computed from the journal's
// records, to compare an index with. Shared by xapian_tests and annals_xapian_projector
// (the child process the kill -9 test kills).

#include <cstdint>
#include <map>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

#include <xapian.h>

#include "account/account.hpp"
#include "annals/actors/xapian_projection.hpp"

namespace xapian_test {

struct account_doc {
  std::string owner;
  bool closed = false;
  std::int64_t balance = 0;
  std::uint64_t events = 0;

  friend bool operator==(const account_doc&, const account_doc&) = default;
};

/// Documents by persistence id.
using account_docs_map = std::map<std::string, account_doc>;

inline std::string describe(const account_doc& d) {
  std::ostringstream out;
  out << "{owner '" << d.owner << "', " << (d.closed ? "closed" : "open") << ", balance "
      << d.balance << ", events " << d.events << "}";
  return out.str();
}

/// The owner a handler refuses: its `opened` event throws.
inline constexpr const char* poison_owner = "poison";

/// Folds one event into `docs` (what the model does, without Xapian).
inline void fold(account_docs_map& docs, const std::string& pid,
                 const bank::account::event_type& ev) {
  std::visit(
    [&](const auto& e) {
      using E = std::decay_t<decltype(e)>;
      auto& d = docs[pid];
      if constexpr (std::is_same_v<E, bank::opened>)
        d.owner = e.owner;
      else if constexpr (std::is_same_v<E, bank::deposited>)
        d.balance += e.cents;
      else if constexpr (std::is_same_v<E, bank::withdrawn>)
        d.balance -= e.cents;
      else if constexpr (std::is_same_v<E, bank::closed>)
        d.closed = true;
      ++d.events;
    },
    ev);
}

/// The fold of the account events among `records` with offsets up to `upto`.
inline account_docs_map fold_records(std::span<const annals::persistence::event_record> records,
                                     std::uint64_t upto) {
  account_docs_map docs;
  for (const auto& r : records) {
    if (r.offset > upto || !r.persistence_id.starts_with("account|"))
      continue;
    auto ev = bank::account::codec_type::decode(r.name, r.version, r.payload);
    if (!ev)
      throw std::runtime_error{"undecodable record at offset " + std::to_string(r.offset)};
    fold(docs, r.persistence_id, *ev);
  }
  return docs;
}

/// The model: as `fold`, into one Xapian document per account (data: pid, events,
/// balance, closed, owner on lines of their own; terms: "Q" + pid and the owner's words).
class account_docs : public annals::actors::typed_xapian_projection<account_docs, bank::account> {
public:
  template <class E>
  void on(const E& e, const annals::actors::envelope& env, Xapian::WritableDatabase& db) {
    if constexpr (std::is_same_v<E, bank::opened>)
      if (e.owner == poison_owner)
        throw std::runtime_error{"poisoned owner"};
    account_docs_map one;
    if constexpr (!std::is_same_v<E, bank::opened>)
      one[env.persistence_id()] = load(db, env.persistence_id());
    fold(one, env.persistence_id(), bank::account::event_type{e});
    store(db, env.persistence_id(), one[env.persistence_id()]);
  }

  static void store(Xapian::WritableDatabase& db, const std::string& pid, const account_doc& d) {
    Xapian::Document doc;
    doc.set_data(pid + "\n" + std::to_string(d.events) + "\n" + std::to_string(d.balance) + "\n"
                 + (d.closed ? "1" : "0") + "\n" + d.owner);
    doc.add_boolean_term("Q" + pid);
    for (const auto& w : annals::actors::search_words(d.owner))
      doc.add_term(w);
    db.replace_document("Q" + pid, doc);
  }

  static account_doc load(const Xapian::Database& db, const std::string& pid) {
    auto term = "Q" + pid;
    auto it = db.postlist_begin(term);
    if (it == db.postlist_end(term))
      throw std::runtime_error{"no document for " + pid};
    return parse(db.get_document(*it).get_data()).second;
  }

  /// (pid, document) from a document's data.
  static std::pair<std::string, account_doc> parse(const std::string& data) {
    std::istringstream in{data};
    std::string pid, events, balance, closed, owner;
    std::getline(in, pid);
    std::getline(in, events);
    std::getline(in, balance);
    std::getline(in, closed);
    std::getline(in, owner);
    return {pid, account_doc{owner, closed == "1", std::stoll(balance), std::stoull(events)}};
  }
};

/// An index as the model left it: its stored offset (projection `name`) and documents,
/// read from one revision.
struct index_state {
  std::uint64_t offset = 0;
  account_docs_map docs;
  std::size_t doc_count = 0; ///< documents in the index (duplicates would show here)
};

inline index_state read_index(const std::string& dir, const std::string& name) {
  Xapian::Database db{dir};
  index_state st;
  st.offset = annals::actors::xapian_stored_offset(db, name);
  st.doc_count = db.get_doccount();
  for (auto it = db.postlist_begin(""); it != db.postlist_end(""); ++it) {
    auto [pid, doc] = account_docs::parse(db.get_document(*it).get_data());
    st.docs[pid] = doc;
  }
  return st;
}

} // namespace xapian_test
