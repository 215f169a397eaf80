# Released scripts are never edited: a database installed from a released install
# script, or updated by a released update script, must stay the database the next
# update script was written for. extension/versions/SHA256SUMS records each released
# file's SHA-256 (sha256sum's format: `cd extension/versions && sha256sum -c SHA256SUMS`);
# this test fails when a file there is not listed, differs from its checksum, or is
# missing. Plain Perl, no server.
#
# The one exception: the update script to the version being developed (EXTVERSION in
# the Makefile; today evproc--0.2.0--0.3.0.sql) is not released yet and is still being
# written. It is frozen when that version is released: its checksum and the new install
# script's go into SHA256SUMS in the release commit, and from then on this test holds
# them too (docs/development.md "Making a version").
#
# evproc--0.1.0--0.2.0.sql was edited once after its release commit (f8b1bdf; ab40ec2
# added the log partitions' xid margin before 0.2.0 reached users): the checksum
# recorded is of the script 0.2.0 shipped with (as of bdb1b9e), the one users have.
use strict;
use warnings;
use Digest::SHA;
use FindBin;
use Test::More;

my $top = "$FindBin::RealBin/..";
my $dir = "$top/extension/versions";

# The version being developed, from the Makefile.
my ($developed) = map { /^EXTVERSION\s*=\s*(\S+)/ ? $1 : () } split /\n/,
  do { local (@ARGV, $/) = ("$top/Makefile"); <> };
like($developed, qr/^\d+\.\d+\.\d+$/, "the version being developed (EXTVERSION): $developed");

# Only an update script into the version being developed may be unreleased.
sub unreleased
{
	my ($file) = @_;
	return $file =~ /^evproc--\d+\.\d+\.\d+--\Q$developed\E\.sql$/;
}

# The recorded checksums: "<64 hex digits>  <file name>" per line.
my %recorded;
open my $sums, '<', "$dir/SHA256SUMS" or die "extension/versions/SHA256SUMS: $!";
while (my $line = <$sums>)
{
	chomp $line;
	my ($sum, $file) = $line =~ /^([0-9a-f]{64}) [ *](\S+)$/
	  or BAIL_OUT("SHA256SUMS line $.: not \"<sha256>  <file>\": $line");
	ok(!exists $recorded{$file}, "$file is listed once");
	$recorded{$file} = $sum;
}
close $sums;

opendir my $dh, $dir or die "$dir: $!";
my @files = sort grep { $_ ne 'SHA256SUMS' && -f "$dir/$_" } readdir $dh;
closedir $dh;
ok(scalar(grep { /\.sql$/ } @files) >= 3, 'extension/versions holds the scripts: ' . join(', ', @files));

for my $file (@files)
{
	if (unreleased($file))
	{
		ok(!exists $recorded{$file},
			"$file updates to $developed, still being developed: not frozen yet (listed when $developed is released)");
		next;
	}
	ok(exists $recorded{$file}, "$file is released and listed in SHA256SUMS")
	  or diag "a released file is frozen: add its checksum when it is released "
	  . "(cd extension/versions && sha256sum $file >> SHA256SUMS)";
	next unless exists $recorded{$file};
	my $actual = Digest::SHA->new(256)->addfile("$dir/$file", 'b')->hexdigest;
	is($actual, $recorded{$file}, "$file is unchanged since its release")
	  or diag "$file was edited after its release: released scripts are never edited. "
	  . 'Put the change into the update script of the version being developed.';
}

# Every file recorded is still there, and none of them is the developed version's.
for my $file (sort keys %recorded)
{
	ok(-f "$dir/$file", "$file (listed) exists");
	ok(!unreleased($file), "$file (listed) is not an update script into $developed");
}

# Today's releases, by name: a SHA256SUMS emptied by mistake would otherwise pass.
for my $file ('evproc--0.1.0.sql', 'evproc--0.1.0--0.2.0.sql', 'evproc--0.2.0.sql')
{
	ok(exists $recorded{$file}, "$file (released) is recorded");
}

done_testing();
