#include "service/bank/errors.hpp"

#include <cstdint>

#include <caf/atom.hpp>
#include <caf/sec.hpp>

#include "account/account.hpp"
#include "account/transfer.hpp"
#include "annals/error.hpp"
#include "annals/persistence/journal.hpp"
#include "match/match.hpp"

namespace service {

namespace ap = annals::persistence;

std::pair<unsigned, std::string> classify(const caf::error& err) {
  auto category = annals::category_name(err);
  auto code = annals::code_name(err);
  if (category == "bank") {
    if (annals::is(err, bank::account_errc::not_found))
      return {404, code};
    if (annals::is(err, bank::account_errc::invalid_amount)
        || annals::is(err, bank::account_errc::amount_overflow)
        || annals::is(err, bank::account_errc::invalid_owner))
      return {422, code};
    return {409, code}; // already_exists, insufficient_funds, account_closed, balance_not_zero
  }
  if (category == "transfer") {
    if (annals::is(err, bank::transfer_errc::not_found))
      return {404, code};
    if (annals::is(err, bank::transfer_errc::invalid_transfer))
      return {422, code};
    return {409, code};
  }
  if (category == "match") {
    if (annals::is(err, match::match_errc::not_found))
      return {404, code};
    if (annals::is(err, match::match_errc::invalid_argument))
      return {422, code};
    return {409, code};
  }
  if (category == "annals") {
    if (annals::is(err, annals::errc::unavailable))
      return {503, code};
    if (annals::is(err, annals::errc::timeout))
      return {504, code};
    if (annals::is(err, annals::errc::invalid_argument))
      return {400, code};
    return {500, code};
  }
  if (category == "journal") {
    if (annals::is(err, ap::journal_errc::disk_full))
      return {507, code};
    if (annals::is(err, ap::journal_errc::too_large))
      return {413, code};
    if (annals::is(err, ap::journal_errc::conflict))
      return {409, code};
    if (annals::is(err, ap::journal_errc::projection_failed))
      return {500, code}; // a read model's defect, not the journal's availability
    return {503, code};
  }
  if (err.category() == caf::atom("system")
      && err.code() == static_cast<std::uint8_t>(caf::sec::request_timeout))
    return {504, "timeout"};
  return {500, "internal_error"};
}

http::response error_response(const caf::error& err) {
  auto [status, code] = classify(err);
  return http::json_error(status, code, annals::render(err));
}

} // namespace service
