// Shows the account aggregate handling commands in-process: each command's reply or
// error, the events it persisted (as the journal stores them), and a replay that rebuilds
// the same state.

#include <iostream>

#include "account/account.hpp"
#include "annals/testkit.hpp"

namespace {

template <class Outcome>
void show(const char* what, const Outcome& out) {
  std::cout << "  " << what << " -> ";
  if (out.reply)
    std::cout << "ok, balance " << *out.reply << " cents";
  else
    std::cout << "refused: " << annals::render(out.reply.error());
  for (const auto& e : out.events) {
    auto enc = bank::account::codec_type::encode(e);
    std::cout << "\n      persisted " << enc.name << " " << enc.payload;
  }
  std::cout << '\n';
}

} // namespace

int main() {
  std::cout << "annals demo: one bank account, commands in, events out\n";
  annals::testkit<bank::account> kit;
  show("open for Ada", kit.when(bank::open{"Ada"}));
  show("deposit 100.00", kit.when(bank::deposit{10'000}));
  show("withdraw 30.00", kit.when(bank::withdraw{3'000}));
  show("withdraw 500.00", kit.when(bank::withdraw{50'000}));
  show("deposit -5.00", kit.when(bank::deposit{-500}));
  show("close with money left", kit.when(bank::close{}));
  std::cout << "journal holds " << kit.journal().size() << " events; replaying them...\n";
  kit.restart();
  std::cout << "  replayed balance " << kit.state().balance << " cents, equal to the live state\n";
  return 0;
}
