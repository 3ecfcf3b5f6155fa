// annals: the operator tool for annals journal files, with no aggregate types or
// projections registered (a service's own `admin` subcommand registers its types; see
// annals/tools/cli.hpp).

#include <iostream>

#include "annals/tools/cli.hpp"

int main(int argc, char** argv) {
  annals::tools::cli tool{"annals"};
  return tool.run(argc, argv, std::cout, std::cerr);
}
