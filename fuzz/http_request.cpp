// libFuzzer target: arbitrary bytes as HTTP requests to annals-bank.
//
// The input goes through service::http::parse_request (the server's own parser, limits and
// target decoding) as up to four pipelined requests. Each request that parses is handed in
// order to a bank_service, started once per process on a fresh SQLite file, exactly as the
// server hands it over, and the harness waits (with a bound) for its response. Checks: nothing
// crashes; a refused parse says why; the handler neither throws nor drops its responder; every
// response has a status in 200..599 and header fields the server can send; a JSON response is
// a valid JSON object, and every response with a status of 400 or more is JSON with an
// "error" code and a "message"; no request gets 500.

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include <boost/json.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "annals/actors/system.hpp"
#include "annals/error.hpp"
#include "service/bank_service.hpp"
#include "service/http.hpp"

namespace {

namespace http = service::http;
using namespace std::chrono_literals;

/// How long a request may take before the harness calls it a hang: above the service's
/// command timeout and its ?fresh=1 wait, which answer 504 and 503 before that.
constexpr auto response_bound = 15s;

/// The most requests one input may carry.
constexpr int max_requests = 4;

[[noreturn]] void fail(const std::string& what, std::string_view input) {
  std::fprintf(stderr, "fuzz_http_request: %s\n  input (%zu bytes): %.*s\n", what.c_str(),
               input.size(), static_cast<int>(std::min<std::size_t>(input.size(), 2000)),
               input.data());
  std::abort();
}

/// The response to one request, filled in by the responder from any thread.
struct reply_slot {
  std::mutex mtx;
  std::condition_variable cv;
  std::optional<http::response> response;
  bool dropped = false;
};

/// Held by every copy of the responder; its destruction means the last copy is gone.
struct drop_signal {
  std::shared_ptr<reply_slot> slot;
  ~drop_signal() {
    {
      std::lock_guard guard{slot->mtx};
      slot->dropped = true;
    }
    slot->cv.notify_all();
  }
};

struct fixture {
  std::filesystem::path dir;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::unique_ptr<service::bank_service> app;
};

fixture* state = nullptr;

std::filesystem::path scratch_dir() {
  // tmpfs when there is one: the journal syncs every commit.
  std::filesystem::path base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  if (const char* tmp = std::getenv("TMPDIR"); tmp != nullptr && *tmp != '\0')
    base = tmp;
  std::string pattern = (base / "annals-fuzz-http-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) {
    std::perror("fuzz_http_request: mkdtemp");
    std::abort();
  }
  return pattern;
}

/// Hands `req` to the service and waits for the response; nullopt when the handler dropped
/// its responder without answering.
std::optional<http::response> exchange(http::request req, std::string_view input) {
  auto slot = std::make_shared<reply_slot>();
  {
    std::shared_ptr<drop_signal> signal{new drop_signal{slot}};
    http::responder respond = [slot, signal](http::response r) {
      {
        std::lock_guard guard{slot->mtx};
        if (slot->response)
          return; // the first call wins
        slot->response = std::move(r);
      }
      slot->cv.notify_all();
    };
    try {
      state->app->handle(std::move(req), std::move(respond));
    } catch (const std::exception& e) {
      fail(std::string{"the handler threw: "} + e.what(), input);
    } catch (...) {
      fail("the handler threw a non-standard exception", input);
    }
  }
  std::unique_lock lock{slot->mtx};
  if (!slot->cv.wait_for(lock, response_bound, [&] { return slot->response || slot->dropped; }))
    fail("no response within " + std::to_string(response_bound.count()) + " s", input);
  return std::move(slot->response);
}

bool valid_field(std::string_view value) {
  return value.find_first_of(std::string_view{"\r\n\0", 3}) == std::string_view::npos;
}

void check_response(const http::response& r, std::string_view input) {
  auto where = [&](const std::string& what) {
    return what + " (status " + std::to_string(r.status) + ", body " + r.body + ")";
  };
  if (r.status < 200 || r.status > 599)
    fail(where("a status outside 200..599"), input);
  if (r.status == 500)
    fail(where("an internal error"), input);
  if (!valid_field(r.content_type))
    fail(where("an invalid Content-Type"), input);
  for (const auto& [name, value] : r.headers)
    if (name.empty() || !valid_field(name) || !valid_field(value))
      fail(where("an invalid header field '" + name + "'"), input);
  bool is_json = r.content_type == "application/json";
  if (!is_json) {
    if (r.status >= 400)
      fail(where("an error that is not JSON"), input);
    return;
  }
  boost::system::error_code ec;
  auto body = boost::json::parse(r.body, ec);
  if (ec)
    fail(where("a body that is not JSON: " + ec.message()), input);
  if (!body.is_object())
    fail(where("a JSON body that is not an object"), input);
  if (r.status >= 400) {
    const auto& o = body.get_object();
    auto* code = o.if_contains("error");
    auto* message = o.if_contains("message");
    if (code == nullptr || !code->is_string() || code->get_string().empty())
      fail(where("an error without an \"error\" code"), input);
    if (message == nullptr || !message->is_string())
      fail(where("an error without a \"message\""), input);
  }
}

/// Runs at exit: stops the service and removes its files. The actor system stays: statics
/// that CAF creates lazily are already destroyed when exit handlers registered before them
/// run, and destroying the system then crashes; its idle threads end with the process.
void stop_service() {
  if (state == nullptr || !state->app)
    return;
  state->app->drain(5s); // best effort: the commands in flight finish
  state->app.reset();
  std::error_code ec;
  std::filesystem::remove_all(state->dir, ec);
}

/// A few accounts, a transfer and a match, so that routes on existing ids find something.
void seed() {
  struct step {
    std::string_view target;
    std::string_view body;
  };
  const step steps[] = {
    {"/accounts", R"({"id":"acc-a","owner":"Ada L"})"},
    {"/accounts", R"({"id":"acc-b","owner":"Bob M"})"},
    {"/accounts/acc-a/deposit", R"({"amount":10000})"},
    {"/transfers", R"({"id":"tr-1","from":"acc-a","to":"acc-b","amount":1})"},
    {"/matches", R"({"id":"m1","home":"Ajax","away":"PSV"})"},
    {"/matches/m1/kick-off", ""},
  };
  for (const auto& [target, body] : steps) {
    auto raw = "POST " + std::string{target} + " HTTP/1.1\r\nContent-Length: "
               + std::to_string(body.size()) + "\r\n\r\n" + std::string{body};
    auto req = http::parse_request(raw);
    if (!req)
      fail("a seed request does not parse: " + req.error(), raw);
    auto r = exchange(std::move(*req), raw);
    if (!r || r->status >= 300)
      fail("a seed request failed: " + (r ? r->body : std::string{"no response"}), raw);
  }
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  state = new fixture;
  state->dir = scratch_dir();
  annals::actors::configure(state->cfg);
  state->sys = std::make_unique<caf::actor_system>(state->cfg);
  auto app = service::bank_service::open(
    *state->sys,
    {.db_path = (state->dir / "bank.db").string(), .command_timeout = 5s, .fresh_timeout = 2s});
  if (!app) {
    std::fprintf(stderr, "fuzz_http_request: cannot open the service: %s\n",
                 annals::render(app.error()).c_str());
    std::abort();
  }
  state->app = std::move(*app);
  std::atexit(stop_service);
  seed();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input{reinterpret_cast<const char*>(data), size};
  // Pipelined requests are handled one after another, as on one connection; a few are
  // enough for sequences such as a write followed by a read of what it wrote.
  std::string_view rest = input;
  for (int i = 0; i < max_requests && !rest.empty(); ++i) {
    std::size_t used = 0;
    auto req = http::parse_request(rest, 64 * 1024, &used);
    if (!req) {
      if (req.error().empty())
        fail("a refused request without a reason", input);
      break;
    }
    if (used == 0 || used > rest.size())
      fail("the parser reports " + std::to_string(used) + " bytes used of "
             + std::to_string(rest.size()),
           input);
    rest.remove_prefix(used);
    auto response = exchange(std::move(*req), input);
    if (!response)
      fail("the handler dropped its responder without answering", input);
    check_response(*response, input);
  }
  return 0;
}
