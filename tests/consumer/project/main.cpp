// A user's own program, built against the installed annals package.

#include <cstdint>
#include <iostream>

#include <boost/describe.hpp>
#include <caf/actor_system.hpp>

#include "annals/actors/system.hpp"
#include "annals/testkit.hpp"

namespace shop {
struct add_item {
  std::int64_t qty;
};
struct item_added {
  static constexpr auto name = "shop.item_added";
  std::int64_t qty;
};
BOOST_DESCRIBE_STRUCT(item_added, (), (qty))
struct cart_state {
  std::int64_t items = 0;
  void apply(const item_added& e) {
    items += e.qty;
  }
  friend bool operator==(const cart_state&, const cart_state&) = default;
};
class cart : public annals::aggregate<cart_state, item_added> {
public:
  annals::task<std::int64_t> handle(add_item cmd) {
    co_await persist(item_added{cmd.qty});
    co_return state().items;
  }
};
} // namespace shop

int main() {
  caf::actor_system_config cfg;
  annals::actors::configure(cfg);
  caf::actor_system sys{cfg};
  annals::testkit<shop::cart> kit;
  auto out = kit.when(shop::add_item{3});
  kit.restart();
  if (!out.reply || *out.reply != 3 || kit.state().items != 3) {
    std::cerr << "consumer: unexpected result\n";
    return 1;
  }
  std::cout << "consumer: ok\n";
  return 0;
}
