#include "annals/error.hpp"

#include <map>
#include <mutex>
#include <vector>

#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>
#include <caf/message.hpp>
#include <caf/sec.hpp>

namespace annals {
namespace detail {
namespace {

struct category_registry {
  std::mutex mtx;
  std::map<caf::atom_value, std::pair<std::string, code_renderer>> entries;
};

category_registry& registry() {
  static category_registry instance;
  return instance;
}

} // namespace

bool register_error_category(std::string_view category, code_renderer render) {
  auto& reg = registry();
  std::lock_guard guard{reg.mtx};
  reg.entries.try_emplace(caf::atom_from_string(category), std::string{category}, render);
  return true;
}

} // namespace detail

namespace {

// Makes sure the framework's own category renders even before its first use.
const caf::error annals_category_anchor = make_error(errc::handler_failed);

} // namespace

void add_error_renderers(caf::actor_system_config& cfg) {
  std::vector<caf::atom_value> categories;
  {
    auto& reg = detail::registry();
    std::lock_guard guard{reg.mtx};
    for (auto& entry : reg.entries)
      categories.push_back(entry.first);
  }
  for (auto category : categories)
    cfg.add_error_category(category,
                           [](std::uint8_t code, caf::atom_value cat, const caf::message& ctx) {
                             return render(caf::error{code, cat, ctx});
                           });
}

std::string category_name(const caf::error& err) {
  return caf::to_string(err.category());
}

std::string code_name(const caf::error& err) {
  auto& reg = detail::registry();
  std::lock_guard guard{reg.mtx};
  if (auto i = reg.entries.find(err.category()); i != reg.entries.end())
    return i->second.second(err.code());
  return "code_" + std::to_string(static_cast<unsigned>(err.code()));
}

std::string context_of(const caf::error& err) {
  const auto& ctx = err.context();
  if (ctx.empty())
    return {};
  if (ctx.size() == 1 && ctx.match_element<std::string>(0))
    return ctx.get_as<std::string>(0);
  return caf::to_string(ctx);
}

std::string render(const caf::error& err) {
  if (!err)
    return "none";
  auto result = category_name(err);
  result += '.';
  if (err.category() == caf::atom("system"))
    result += caf::to_string(static_cast<caf::sec>(err.code()));
  else
    result += code_name(err);
  if (auto ctx = context_of(err); !ctx.empty()) {
    result += ": ";
    result += ctx;
  }
  return result;
}

const char* rejected::what() const noexcept {
  if (what_.empty())
    what_ = render(error_);
  return what_.c_str();
}

} // namespace annals

namespace annals::detail {

caf::error current_exception_to_error() noexcept {
  try {
    throw;
  } catch (const rejected& r) {
    return r.error();
  } catch (const std::exception& e) {
    return make_error(errc::handler_failed, e.what());
  } catch (...) {
    return make_error(errc::handler_failed, "a handler threw a non-standard exception");
  }
}

} // namespace annals::detail
