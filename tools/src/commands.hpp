#pragma once

// Internal to the annals tool: one function per subcommand (each in its own file), called
// by `cli::run` with the arguments after the subcommand's name.

#include <istream>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "annals/tools/cli.hpp"

namespace annals::tools::detail {

using args_list = std::vector<std::string>;

int inspect(const args_list& in, const std::vector<cli::projection_entry>& known,
            std::ostream& out);
int events(const args_list& in, std::ostream& out);
int state(const args_list& in, const std::vector<cli::aggregate_entry>& known,
          const std::string& program, std::ostream& out);
int verify(const args_list& in, std::ostream& out);
int rebuild(const args_list& in, const std::vector<cli::projection_entry>& known,
            const std::string& program, std::ostream& out, std::ostream& err);
int export_log(const args_list& in, std::ostream& out);
int import_log(const args_list& in, std::istream& input, std::ostream& out);
int backup(const args_list& in, std::ostream& out);

} // namespace annals::tools::detail
