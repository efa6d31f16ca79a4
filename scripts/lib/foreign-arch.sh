# Sourced by scripts that run another architecture's programs (maintainer scripts, the
# agent, mkinitramfs) inside a chroot: binfmt_misc + qemu-user (qemu-user-static and
# binfmt-support come from scripts/setup). Needs root.
#
#   enable_foreign_arch DEBIAN_ARCH    returns non-zero, saying why, when it cannot
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
