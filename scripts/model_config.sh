# Sourced by fetch_weights.sh and prepare_models.sh, so that both read a config.pbtxt the
# same way. Needs only sed, tr and grep.

# Prints the value of field $2 of the `weights { ... }` block of config $1 ("" if absent).
# A light reading of the text format, enough for configs people write: comments dropped
# (a '#' at the start of a line or after blanks), the file joined into one line, then the
# first weights block, then the field, quoted with "..." or '...', or an enum name.
weights_field() {
  local block
  block=$(sed -e 's/^[[:space:]]*#.*$//' -e 's/[[:space:]]#.*$//' "$1" | tr '\n' ' ' |
          grep -oE 'weights[[:space:]]*:?[[:space:]]*\{[^}]*\}' | head -n1)
  printf '%s' "$block" |
    grep -oE "(^|[{[:space:]])$2[[:space:]]*:[[:space:]]*(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_]+)" |
    head -n1 | sed -E "s/^[{[:space:]]?$2[[:space:]]*:[[:space:]]*//; s/^[\"']//; s/[\"']$//"
}
