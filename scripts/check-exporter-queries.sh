#!/usr/bin/env bash
# Checks examples/monitoring/postgres_exporter.yml against a database with evproc: runs
# every query of the file and checks that it returns exactly the columns the file
# declares for it, labels as text and metrics as numbers. A missing column, an
# undeclared one, a wrong type, a failing query or a file it cannot parse fails the
# script (exit 1; 2 for usage and parse errors). Needs perl (core modules only) and psql.
#
# Usage: scripts/check-exporter-queries.sh [psql connection options]
#   default connection: -h /tmp -p ${EVPROC_DEMO_PORT:-5499} -U postgres -d evproc_demo
#   (the server scripts/demo.sh leaves running)
# Environment: EVPROC_EXPORTER_QUERIES (the file), PSQL or PG_BINDIR (which psql).
set -euo pipefail

cd "$(dirname "$0")/.."
queries=${EVPROC_EXPORTER_QUERIES:-examples/monitoring/postgres_exporter.yml}
if [[ -n ${PSQL:-} ]]; then
  psql=$PSQL
elif [[ -n ${PG_BINDIR:-} ]]; then
  psql=$PG_BINDIR/psql
elif [[ -x /usr/lib/postgresql/15/bin/psql ]]; then
  psql=/usr/lib/postgresql/15/bin/psql
else
  psql=psql
fi
if (($# == 0)); then
  set -- -h /tmp -p "${EVPROC_DEMO_PORT:-5499}" -U postgres -d evproc_demo
fi
[[ -r $queries ]] || { echo "check-exporter-queries: cannot read $queries" >&2; exit 2; }

# The file is parsed by hand (no YAML module is assumed): it must keep the layout it has,
# a namespace per top-level key with `query: |` (a block) or `query: "..."` (one line),
# and `metrics:` as a list of `- column:` entries with `usage:` and `description:`.
read -r -d '' program <<'PERL' || true
use strict;
use warnings;
$| = 1;  # our lines and psql's errors in the order they happen
use File::Temp qw(tempfile);

my ($file, @psql) = @ARGV;
open(my $in, '<', $file) or die "cannot read $file: $!\n";
my @lines = <$in>;
close($in);

my (@order, %ns);
my ($cur, $col);
sub parse_error { print STDERR "$file:$_[0]: cannot parse: $_[1]\n"; exit 2; }
for (my $i = 0; $i < @lines; $i++) {
  my $line = $lines[$i];
  chomp $line;
  my $n = $i + 1;
  next if $line =~ /^\s*(#.*)?$/;
  if ($line =~ /^([A-Za-z_][A-Za-z0-9_]*):\s*$/) {
    parse_error($n, "namespace $1 declared twice") if exists $ns{$1};
    $cur = $1;
    push @order, $cur;
    $ns{$cur} = { query => undef, columns => [], usage => {} };
    $col = undef;
  } elsif (!defined $cur) {
    parse_error($n, $line);
  } elsif ($line =~ /^  query:\s*\|\s*$/) {
    my @q;
    while ($i + 1 < @lines && $lines[$i + 1] =~ /^(\s*$|    )/) {
      my $q = $lines[++$i];
      chomp $q;
      push @q, $q;
    }
    $ns{$cur}{query} = join("\n", @q);
  } elsif ($line =~ /^  query:\s*"(.*)"\s*$/) {
    (my $q = $1) =~ s/\\"/"/g;
    $ns{$cur}{query} = $q;
  } elsif ($line =~ /^  (master|cache_seconds|runonserver):\s*\S/) {
    # exporter options: nothing to check here
  } elsif ($line =~ /^  metrics:\s*$/) {
    $col = undef;
  } elsif ($line =~ /^    - ([A-Za-z_][A-Za-z0-9_]*):\s*$/) {
    $col = $1;
    parse_error($n, "column $col declared twice in $cur") if exists $ns{$cur}{usage}{$col};
    push @{ $ns{$cur}{columns} }, $col;
    $ns{$cur}{usage}{$col} = undef;
  } elsif (defined $col && $line =~ /^        usage:\s*"?([A-Z]+)"?\s*$/) {
    $ns{$cur}{usage}{$col} = $1;
  } elsif (defined $col && $line =~ /^        description:\s*\S/) {
    # free text
  } else {
    parse_error($n, $line);
  }
}
parse_error(scalar(@lines), 'no namespace') unless @order;

my %numeric = map { $_ => 1 } ('smallint', 'integer', 'bigint', 'real', 'double precision', 'numeric');
my %textual = map { $_ => 1 } ('text', 'character varying', 'name', 'character');
my $failures = 0;
for my $name (@order) {
  my $spec = $ns{$name};
  my @problems;
  push @problems, 'no query' unless defined $spec->{query} && $spec->{query} =~ /\S/;
  push @problems, 'no metrics' unless @{ $spec->{columns} };
  for my $c (@{ $spec->{columns} }) {
    my $u = $spec->{usage}{$c};
    push @problems, "column $c: usage must be LABEL, GAUGE or COUNTER, got " . ($u // 'none')
      unless defined $u && $u =~ /^(LABEL|GAUGE|COUNTER)$/;
  }
  if (@problems) {
    print "FAIL $name: ", join('; ', @problems), "\n";
    $failures++;
    next;
  }
  (my $query = $spec->{query}) =~ s/[\s;]+$//;
  my ($fh, $script) = tempfile(UNLINK => 1);
  # \gdesc names and types the result's columns; the count runs the query itself.
  print $fh "\\echo __columns__\n$query\n\\gdesc\n\\echo __rows__\nSELECT count(*) FROM (\n$query\n) AS q;\n";
  close($fh);
  open(my $out, '-|', @psql, '-X', '-q', '-A', '-t', '-F', "\t", '-v', 'ON_ERROR_STOP=1', '-f', $script)
    or die "cannot run $psql[0]: $!\n";
  my (@described, %type, $rows, $section);
  while (my $l = <$out>) {
    chomp $l;
    if ($l eq '__columns__' || $l eq '__rows__') { $section = $l; next; }
    if (($section // '') eq '__columns__') {
      my ($c, $t) = split(/\t/, $l, 2);
      push @described, $c;
      $type{$c} = $t;
    } elsif (($section // '') eq '__rows__') {
      $rows = $l;
    }
  }
  close($out);
  if ($? != 0 || !defined $rows) {
    print "FAIL $name: the query failed (psql exit ", $? >> 8, ")\n";
    $failures++;
    next;
  }
  my %returned = map { $_ => 1 } @described;
  for my $c (@{ $spec->{columns} }) {
    if (!$returned{$c}) {
      push @problems, "declared column $c is not returned";
      next;
    }
    my $u = $spec->{usage}{$c};
    if ($u eq 'LABEL' && !$textual{ $type{$c} }) {
      push @problems, "label $c is $type{$c}, not text";
    } elsif ($u ne 'LABEL' && !$numeric{ $type{$c} }) {
      push @problems, "$u $c is $type{$c}, not a number";
    }
  }
  my %seen;
  for my $c (@described) {
    push @problems, "column $c is returned twice" if $seen{$c}++;
    push @problems, "returned column $c is not declared" unless exists $spec->{usage}{$c};
  }
  if (@problems) {
    print "FAIL $name: ", join('; ', @problems), "\n";
    $failures++;
  } else {
    printf "ok   %s: %d columns (%d labels), %d rows\n", $name, scalar(@described),
      scalar(grep { $spec->{usage}{$_} eq 'LABEL' } @described), $rows;
  }
}
printf "%d of %d queries of %s pass\n", @order - $failures, scalar(@order), $file;
exit($failures ? 1 : 0);
PERL

exec perl -e "$program" "$queries" "$psql" "$@"
