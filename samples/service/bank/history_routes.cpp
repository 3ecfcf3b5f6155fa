#include "service/bank/history_routes.hpp"

#include <utility>
#include <vector>

#include <boost/json/array.hpp>
#include <boost/json/parse.hpp>

#include "annals/persistence/blocking.hpp"

namespace service {

namespace json = boost::json;
namespace ap = annals::persistence;
using namespace std::chrono_literals;

void events_route(bank_context& ctx, const http::request& req, const std::string& type,
                  const std::string& raw_id, http::responder& respond) {
  auto id = check_id(type + " id", raw_id);
  auto from = query_number(req, "from", 1, 1, std::numeric_limits<std::int64_t>::max());
  auto limit = query_number(req, "limit", 100, 1, 1000);
  ctx.on_worker(respond, [&ctx, type, id, from, limit] {
    auto pid = annals::persistence_id{type, id}.str();
    auto rows = ap::wait_for<std::vector<ap::event_record>>(
      [&](auto cb) {
        ctx.journal->read_stream(pid, from, std::numeric_limits<std::uint64_t>::max(), limit,
                                 std::move(cb));
      },
      10s);
    if (!rows)
      throw api_error{503, "journal_unavailable", annals::render(rows.error())};
    if (rows->empty() && from == 1)
      throw api_error{404, "not_found", "no " + type + " " + id};
    json::array events;
    for (const auto& rec : *rows) {
      boost::system::error_code ec;
      auto data = json::parse(rec.payload, ec);
      json::object o{{"seq", rec.seq},
                     {"type", rec.name},
                     {"version", rec.version},
                     {"offset", rec.offset},
                     {"timestamp", iso_time(rec.timestamp_us)}};
      if (ec)
        o["raw"] = rec.payload; // a row the journal holds but that is not JSON: shown as is
      else
        o["data"] = std::move(data);
      if (!rec.metadata.command_id.empty())
        o["command_id"] = rec.metadata.command_id;
      if (!rec.metadata.correlation_id.empty())
        o["correlation_id"] = rec.metadata.correlation_id;
      events.push_back(std::move(o));
    }
    return json_response(200, json::object{{"id", id}, {"events", std::move(events)}});
  });
}

} // namespace service
