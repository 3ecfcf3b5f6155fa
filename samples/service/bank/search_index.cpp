#include "service/bank/search_index.hpp"

#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <boost/json.hpp>
#include <xapian.h>

#include "account/account.hpp"
#include "annals/actors/xapian_projection.hpp"
#include "annals/error.hpp"
#include "annals/persistence/redact.hpp"
#include "match/match.hpp"
#include "service/bank/errors.hpp"

namespace service {

namespace json = boost::json;
namespace aa = annals::actors;

namespace {

// Terms: "Q" + persistence id (one document per aggregate), "K" + kind (account, match);
// the folded words carry no prefix. Value slot 0 holds the id (the tie-break of equal
// scores). The document's data is its hit without the score, as JSON.
constexpr Xapian::valueno id_slot = 0;
const std::string account_kind = "account";
const std::string match_kind = "match";

// Xapian refuses terms over 245 bytes: a longer persistence id is cut and completed by a
// hash of the whole (FNV-1a, the same in every build).
std::string unique_term(const std::string& pid) {
  constexpr std::size_t max_term = 200;
  if (pid.size() + 1 <= max_term)
    return "Q" + pid;
  std::uint64_t h = 14695981039346656037ULL;
  for (unsigned char c : pid)
    h = (h ^ c) * 1099511628211ULL;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return "Q" + pid.substr(0, max_term - 1 - 1 - 16) + "#" + hex;
}

// A document for `hit` (the data), searchable by the words of `texts`.
Xapian::Document make_document(const std::string& pid, const std::string& kind,
                               const json::object& hit, const std::vector<std::string>& texts) {
  Xapian::Document doc;
  doc.set_data(json::serialize(hit));
  doc.add_boolean_term(unique_term(pid));
  doc.add_boolean_term("K" + kind);
  doc.add_value(id_slot, std::string{hit.at("id").as_string()});
  for (const auto& t : texts)
    for (const auto& w : aa::search_words(t))
      doc.add_term(w);
  return doc;
}

// The data of the document of `pid`; throws when there is none (an event before its
// aggregate's first one would be a corrupt journal).
json::object document_data(Xapian::WritableDatabase& db, const std::string& pid) {
  auto term = unique_term(pid);
  auto it = db.postlist_begin(term);
  if (it == db.postlist_end(term))
    throw std::runtime_error{"no search document for " + pid};
  return json::parse(db.get_document(*it).get_data()).as_object();
}

void put_account(Xapian::WritableDatabase& db, const std::string& pid, const json::object& hit) {
  db.replace_document(unique_term(pid), make_document(pid, account_kind, hit,
                                                      {std::string{hit.at("owner").as_string()}}));
}

void put_match(Xapian::WritableDatabase& db, const std::string& pid, const json::object& hit) {
  std::vector<std::string> texts{std::string{hit.at("home").as_string()},
                                 std::string{hit.at("away").as_string()}};
  for (const auto& p : hit.at("players").as_array())
    texts.emplace_back(p.as_string());
  db.replace_document(unique_term(pid), make_document(pid, match_kind, hit, texts));
}

// Adds the players `names` to the match document of `env`, keeping the list sorted and
// without duplicates.
void add_players(Xapian::WritableDatabase& db, const aa::envelope& env,
                 std::initializer_list<const std::string*> names) {
  auto hit = document_data(db, env.persistence_id());
  std::set<std::string> players;
  for (const auto& p : hit.at("players").as_array())
    players.emplace(p.as_string());
  auto before = players.size();
  for (const auto* n : names)
    players.insert(*n);
  if (players.size() == before)
    return;
  json::array list;
  for (const auto& p : players)
    list.emplace_back(p);
  hit["players"] = std::move(list);
  put_match(db, env.persistence_id(), hit);
}

class search_projection
  : public aa::typed_xapian_projection<search_projection, bank::account, match::football_match> {
public:
  void on(const bank::opened& e, const aa::envelope& env, Xapian::WritableDatabase& db) {
    put_account(db, env.persistence_id(),
                json::object{{"id", env.entity_id()}, {"owner", e.owner}, {"closed", false}});
  }
  void on(const bank::closed&, const aa::envelope& env, Xapian::WritableDatabase& db) {
    auto hit = document_data(db, env.persistence_id());
    hit["closed"] = true;
    put_account(db, env.persistence_id(), hit);
  }
  void on(const match::scheduled& e, const aa::envelope& env, Xapian::WritableDatabase& db) {
    put_match(
      db, env.persistence_id(),
      json::object{
        {"id", env.entity_id()}, {"home", e.home}, {"away", e.away}, {"players", json::array{}}});
  }
  void on(const match::goal_scored& e, const aa::envelope& env, Xapian::WritableDatabase& db) {
    add_players(db, env, {&e.player});
  }
  void on(const match::card_shown& e, const aa::envelope& env, Xapian::WritableDatabase& db) {
    add_players(db, env, {&e.player});
  }
  void on(const match::substituted& e, const aa::envelope& env, Xapian::WritableDatabase& db) {
    add_players(db, env, {&e.player_out, &e.player_in});
  }
};

[[noreturn]] void unavailable(const std::string& dir, const std::string& what) {
  throw api_error{503, "read_model_unavailable",
                  "cannot read the search index " + dir + ": "
                    + annals::persistence::one_line(what)};
}

// Every word must match, exactly (weighted once more) or as the beginning of a word.
Xapian::Query words_query(std::string_view text) {
  auto words = aa::search_words(text);
  if (words.empty())
    throw api_error{400, "invalid_query", "the search text has no words (letters or digits)"};
  std::vector<Xapian::Query> parts;
  for (const auto& w : words)
    parts.emplace_back(Xapian::Query::OP_OR, Xapian::Query{w},
                       Xapian::Query{Xapian::Query::OP_WILDCARD, w, 200,
                                     Xapian::Query::WILDCARD_LIMIT_MOST_FREQUENT});
  return Xapian::Query{Xapian::Query::OP_AND, parts.begin(), parts.end()};
}

json::object run_search(const std::string& dir, const std::string& kind, std::string_view text,
                        std::uint64_t limit) {
  auto query =
    Xapian::Query{Xapian::Query::OP_FILTER, words_query(text), Xapian::Query{"K" + kind}};
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec))
    unavailable(dir, "no such directory");
  // The offset and the hits come from one revision of the index; a commit that replaces
  // the blocks being read throws DatabaseModifiedError, and the read starts again on the
  // newest revision.
  for (int attempt = 1;; ++attempt) {
    try {
      Xapian::Database db{dir};
      auto offset = aa::xapian_stored_offset(db, search_projection_name);
      Xapian::Enquire enquire{db};
      enquire.set_query(query);
      enquire.set_sort_by_relevance_then_value(id_slot, false);
      auto mset = enquire.get_mset(0, static_cast<Xapian::doccount>(limit));
      json::array hits;
      for (auto it = mset.begin(); it != mset.end(); ++it) {
        auto hit = json::parse(it.get_document().get_data()).as_object();
        hit["score"] = it.get_weight();
        hits.emplace_back(std::move(hit));
      }
      return json::object{{"offset", offset}, {"hits", std::move(hits)}};
    } catch (const Xapian::DatabaseModifiedError& e) {
      if (attempt >= 5)
        unavailable(dir, e.get_description());
    } catch (const Xapian::Error& e) {
      unavailable(dir, e.get_description());
    }
  }
}

} // namespace

caf::error create_search_index(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return annals::make_error(annals::errc::unavailable, "cannot create the search index directory "
                                                           + dir + ": " + ec.message());
  try {
    Xapian::WritableDatabase db{dir, Xapian::DB_CREATE_OR_OPEN};
    db.close();
    return {};
  } catch (const Xapian::DatabaseLockError& e) {
    return annals::make_error(annals::errc::unavailable,
                              "the search index " + dir
                                + " is locked by another writer (another annals-bank on the same "
                                  "--db or --search-dir?): "
                                + annals::persistence::one_line(e.get_description()));
  } catch (const Xapian::Error& e) {
    return annals::make_error(annals::errc::unavailable,
                              "cannot open the search index " + dir + ": "
                                + annals::persistence::one_line(e.get_description()));
  }
}

aa::projection spawn_search_projection(caf::actor_system& sys,
                                       annals::persistence::journal_ptr journal,
                                       const std::string& dir) {
  return aa::spawn_projection(
    sys, std::move(journal), std::make_shared<search_projection>(),
    aa::xapian_projection_options{.name = std::string{search_projection_name}, .path = dir});
}

std::shared_ptr<aa::projection_sink> make_search_sink(const std::string& dir) {
  return aa::make_xapian_sink(
    std::make_shared<search_projection>(),
    aa::xapian_projection_options{.name = std::string{search_projection_name}, .path = dir});
}

json::object search_accounts(const std::string& dir, std::string_view text, std::uint64_t limit) {
  return run_search(dir, account_kind, text, limit);
}

json::object search_matches(const std::string& dir, std::string_view text, std::uint64_t limit) {
  return run_search(dir, match_kind, text, limit);
}

} // namespace service
