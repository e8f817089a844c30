# The convstore tool's sources, listed explicitly (no globbing). All but
# main.cpp form convstore_cli_core, which the tests link too.
set(CONVSTORE_CLI_CORE_SOURCES
  src/cli/app.cpp
  src/cli/commands.cpp
  src/cli/commands_data.cpp
  src/cli/common.cpp
  src/cli/duration.cpp
  src/cli/progress.cpp
  src/cli/redact.cpp
)
set(CONVSTORE_CLI_MAIN_SOURCES
  src/cli/main.cpp
)
