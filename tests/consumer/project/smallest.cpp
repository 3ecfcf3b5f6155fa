// The smallest complete annals program: an aggregate, a host on a SQLite journal, a typed
// projection, and a read-your-writes query. README shows it; the consumer test builds it
// against the installed package and checks what it prints.

#include <cstdio>

#include <boost/describe.hpp>

#include "annals/actors/host.hpp"
#include "annals/actors/typed_projection.hpp"
#include "annals/persistence/sqlite_journal.hpp"

struct add_item {
  int qty;
};
struct item_added {
  static constexpr auto name = "shop.item_added";
  int qty;
};
BOOST_DESCRIBE_STRUCT(item_added, (), (qty))

struct cart_state {
  int items = 0;
  void apply(const item_added& e) {
    items += e.qty;
  }
};

struct cart : annals::aggregate<cart_state, item_added> {
  static constexpr auto name = "cart";
  annals::task<int> handle(add_item cmd) {
    co_await persist(item_added{cmd.qty});
    co_return state().items;
  }
};

struct items_sold : annals::actors::typed_projection<items_sold, cart> {
  int total = 0; // written on the projection's thread; read after await_offset
  void on(const item_added& e, const annals::actors::envelope&) {
    total += e.qty;
  }
};

int main() {
  annals::actors::actor_system sys;
  auto journal = annals::persistence::sqlite_journal::open({.path = "shop.db"});
  annals::actors::host shop{sys, *journal};
  auto sold = std::make_shared<items_sold>();
  auto proj = annals::actors::spawn_projection(sys, *journal, sold, {.name = "sold"});
  if (auto err = shop.register_aggregate<cart>())
    return 1;
  auto r = shop.ask_reply<cart>("cart-1", add_item{3});
  if (r && proj.await_offset(r->offset, std::chrono::seconds{5}))
    std::printf("cart-1 holds %d items; the projection counted %d\n", r->value, sold->total);
}
