# Sourced by the scripts that build and use Debian chroots (scripts/build-image,
# tests/packaging/lifecycle). mmdebstrap, binfmt-support, arch-test and qemu-user-static
# come from scripts/setup. Needs root.

# enable_foreign_arch DEBIAN_ARCH: another architecture's programs (maintainer scripts,
# the agent, mkinitramfs) run in the chroot through binfmt_misc + qemu-user. Returns
# non-zero, saying why, when they cannot.
enable_foreign_arch() {
  local q
  case "$1" in
    amd64) return 0 ;;
    arm64) q=qemu-aarch64 ;;
    armhf) q=qemu-arm ;;
    *) echo "unknown Debian architecture $1" >&2; return 1 ;;
  esac
  [ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  update-binfmts --enable "$q" 2>/dev/null || true
  [ -e "/proc/sys/fs/binfmt_misc/$q" ] || { echo "binfmt for $q is not registered" >&2; return 1; }
}

# mmdebstrap_cached TAR MMDEBSTRAP_ARGS... SUITE: a Debian base system as TAR, built
# once (an interrupted build leaves no TAR behind).
mmdebstrap_cached() {
  local tar="$1"; shift
  [ -s "$tar" ] && return 0
  # mmdebstrap picks the output format from the name: keep ".tar" last.
  local partial="${tar%.tar}.partial.tar"
  rm -f "$partial"
  mmdebstrap --quiet --mode=root --variant=apt --aptopt='DPkg::Lock::Timeout "900"' "$@" "$partial"
  mv "$partial" "$tar"
}

# chroot_mount ROOT / chroot_umount ROOT: what dpkg and its maintainer scripts need
# (/proc, /dev, /dev/pts); unmounting is safe to repeat.
chroot_mount() {
  mount -t proc proc "$1/proc"
  mount --bind /dev "$1/dev"
  mount --bind /dev/pts "$1/dev/pts"
}
chroot_umount() {
  local m
  for m in proc dev/pts dev; do umount -l "$1/$m" 2>/dev/null || true; done
}
