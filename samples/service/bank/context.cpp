#include "service/bank/context.hpp"

#include <exception>
#include <stdexcept>

#include "annals/error.hpp"
#include "annals/persistence/blocking.hpp"
#include "service/bank/request_fields.hpp"

namespace service {

namespace ap = annals::persistence;
namespace aa = annals::actors;
using namespace std::chrono_literals;

aa::projection& bank_context::projection_named(std::string_view name) {
  for (auto& p : projections)
    if (p.name() == name)
      return p;
  throw std::logic_error{"no projection " + std::string{name}};
}

void bank_context::count(unsigned status) {
  std::lock_guard guard{status_mtx_};
  ++responses_by_status_[status];
}

std::map<unsigned, std::uint64_t> bank_context::responses_by_status() const {
  std::lock_guard guard{status_mtx_};
  return responses_by_status_;
}

std::string bank_context::idempotency_key(const http::request& req) const {
  auto key = req.header("idempotency-key");
  if (key.empty())
    return key;
  if (auto err = aa::host::check_id(key, "Idempotency-Key"))
    throw api_error{400, "invalid_idempotency_key", annals::context_of(err)};
  return key;
}

void bank_context::on_worker(http::responder& respond, std::function<http::response()> job) {
  workers->post([respond, job = std::move(job)]() mutable {
    try {
      respond(job());
    } catch (const api_error& e) {
      respond(http::json_error(e.status, e.code, e.message));
    } catch (const std::exception& e) {
      respond(http::json_error(500, "internal_error", e.what()));
    }
  });
}

std::uint64_t bank_context::head_offset() {
  auto head =
    ap::wait_for<std::uint64_t>([this](auto cb) { journal->head_offset(std::move(cb)); }, 10s);
  if (!head)
    throw api_error{503, "journal_unavailable", annals::render(head.error())};
  return *head;
}

void bank_context::maybe_fresh(const http::request& req, std::string_view name) {
  if (!query_flag(req, "fresh"))
    return;
  auto head = head_offset();
  auto st = projection_named(name).await_offset(head, opts.fresh_timeout);
  if (!st)
    throw api_error{503, "read_model_behind", annals::render(st.error())};
}

} // namespace service
