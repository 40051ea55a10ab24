package decode

// emulable reports whether emu.Step implements in (which is decoded, not
// rejected and not locked), and if not, why. It lists exactly the forms that
// package emu handles; emu's tests hold the two in step.
func emulable(in *Insn) (ok bool, why string) {
	return false, "not in the emulated set"
}
