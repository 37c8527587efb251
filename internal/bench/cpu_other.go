//go:build !linux

package bench

import "errors"

var errNoCPU = errors.New("the machine's CPU time is read on Linux only")

func machineCPU() (float64, error) { return 0, errNoCPU }

func selfCPU() (float64, error) { return 0, errNoCPU }
