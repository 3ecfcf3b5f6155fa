#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "account/account.hpp"
#include "service/bank/history_routes.hpp"
#include "service/bank/request_fields.hpp"
#include "service/bank/routes.hpp"
#ifdef ANNALS_BANK_WITH_XAPIAN
#include "service/bank/search_index.hpp"
#endif

namespace service {

namespace json = boost::json;

namespace {

using account_command = std::variant<bank::deposit, bank::withdraw, bank::close, bank::get_account>;

// A command on an existing account, `METHOD /accounts/{id}[/action]`, answered 200 with the
// account's view. A route that does not read its body (a GET) ignores it; one that does
// checks it before the id and reads its `fields` after.
struct account_command_route {
  const char* method;
  const char* action; // "" for the account itself
  bool reads_body;
  std::vector<std::string_view> fields;
  account_command (*build)(const body_fields&);
};

const account_command_route account_commands[] = {
  {"POST",
   "deposit",
   true,
   {"amount"},
   [](const body_fields& f) -> account_command { return bank::deposit{f.integer("amount")}; }},
  {"POST",
   "withdraw",
   true,
   {"amount"},
   [](const body_fields& f) -> account_command { return bank::withdraw{f.integer("amount")}; }},
  {"POST", "close", true, {}, [](const body_fields&) -> account_command { return bank::close{}; }},
  {"GET", "", false, {}, [](const body_fields&) -> account_command { return bank::get_account{}; }},
};

auto account_reply(const std::string& id) {
  return [id](const bank::account_view& v) { return account_json(id, v); };
}

} // namespace

void add_account_routes(bank_context& ctx) {
  auto& routes = ctx.routes;

  routes.add("POST", {"accounts"}, [&ctx](req_t req, args_t, resp_t respond) {
    body_fields f{req.body, {"id", "owner"}};
    auto id = check_id("account id", f.text("id"));
    ctx.command<bank::account>(req, id, bank::open{f.text("owner")}, 201, account_reply(id),
                               respond);
  });
  for (const auto& r : account_commands) {
    std::vector<std::string> pattern{"accounts", "*"};
    if (*r.action != '\0')
      pattern.emplace_back(r.action);
    routes.add(r.method, std::move(pattern), [&ctx, &r](req_t req, args_t a, resp_t respond) {
      body_fields f{r.reads_body ? req.body : std::string{}, r.fields};
      auto id = check_id("account id", a[0]);
      std::visit(
        [&](auto cmd) {
          ctx.command<bank::account>(req, id, std::move(cmd), 200, account_reply(id), respond);
        },
        r.build(f));
    });
  }
  routes.add("GET", {"accounts", "*", "events"}, [&ctx](req_t req, args_t a, resp_t respond) {
    events_route(ctx, req, bank::account::name, a[0], respond);
  });
  routes.add("GET", {"accounts", "*", "state"}, [&ctx](req_t req, args_t a, resp_t respond) {
    state_route<bank::account>(ctx, req, bank::account::name, a[0], respond);
  });
  routes.add("GET", {"accounts"}, [&ctx](req_t req, args_t, resp_t respond) {
    auto after = req.query.count("after") ? req.query.at("after") : std::string{};
    auto limit = query_number(req, "limit", 100, 1, 1000);
    ctx.on_worker(respond, [&ctx, req, after, limit] {
      ctx.maybe_fresh(req, "balances");
      return json_response(200, ctx.models->accounts(after, limit));
    });
  });
  routes.add("GET", {"accounts", "*", "statement"}, [&ctx](req_t req, args_t a, resp_t respond) {
    auto id = check_id("account id", a[0]);
    ctx.on_worker(respond, [&ctx, req, id] {
      ctx.maybe_fresh(req, "statement");
      return json_response(200, ctx.models->statement(id));
    });
  });
  // GET /search?owner=TEXT (accounts) or ?match=TEXT (football matches, by team or player).
  routes.add("GET", {"search"}, [&ctx](req_t req, args_t, resp_t respond) {
    auto owner = req.query.find("owner");
    auto match = req.query.find("match");
    if ((owner == req.query.end()) == (match == req.query.end()))
      throw api_error{400, "invalid_query",
                      "give one of the query parameters 'owner' (accounts) or 'match' (matches)"};
    auto i = owner != req.query.end() ? owner : match;
    if (i->second.empty())
      throw api_error{400, "invalid_query", "query parameter '" + i->first + "' is empty"};
    auto text = i->second;
    bool accounts = i == owner;
    auto limit = query_number(req, "limit", 50, 1, 1000);
#ifdef ANNALS_BANK_WITH_XAPIAN
    ctx.on_worker(respond, [&ctx, req, text, accounts, limit] {
      ctx.maybe_fresh(req, "search");
      return json_response(200, accounts ? search_accounts(ctx.search_dir, text, limit)
                                         : search_matches(ctx.search_dir, text, limit));
    });
#else
    (void)ctx;
    (void)respond;
    (void)text;
    (void)accounts;
    (void)limit;
    throw api_error{501, "search_unavailable",
                    "this annals-bank was built without Xapian (libxapian-dev missing at "
                    "configure time)"};
#endif
  });
}

} // namespace service
