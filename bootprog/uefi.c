/*
 * ggnet test UEFI application: the UEFI twin of bios.asm.
 *
 * It finds the whole disk it was loaded from (not the ESP partition: the state
 * sector lives outside every partition, at the same LBA the BIOS program uses), reads
 * the state sector.  If the state's flags (u32 at byte 44) have HANG_UEFI set, it
 * prints GGNET-HANG fw=uefi and stalls forever (the boot test's "fails under UEFI"
 * disk).  Otherwise it prints
 *     GGNET-BOOT fw=uefi id=<identity> count=<n>
 * stores n+1 back through the disk's Block IO protocol, prints
 *     GGNET-WROTE fw=uefi count=<n+1>
 * and stalls forever.  Text goes to ConOut, which OVMF copies to the serial port.
 */
#include <efi.h>
#include <efilib.h>

#ifndef STATE_LBA
#define STATE_LBA 48
#endif
#define HANG_UEFI 2 /* bit in the state's flags (build.py FLAG_HANG) */

static const CHAR8 magic[8] = {'G', 'G', 'N', 'E', 'T', 'S', 'T', '1'};

/* Byte length of a device path without its end node. */
static UINTN path_len(EFI_DEVICE_PATH *p)
{
	UINTN n = 0;
	while (!IsDevicePathEnd(p)) {
		n += DevicePathNodeLength(p);
		p = NextDevicePathNode(p);
	}
	return n;
}

/* The Block IO of the whole disk whose device path is a prefix of the image's. */
static EFI_BLOCK_IO *boot_disk(EFI_HANDLE image)
{
	EFI_LOADED_IMAGE *li;
	EFI_DEVICE_PATH *img_path;
	EFI_HANDLE *handles;
	UINTN count, i;
	EFI_BLOCK_IO *found = NULL;

	if (EFI_ERROR(uefi_call_wrapper(BS->HandleProtocol, 3, image, &LoadedImageProtocol, (void **)&li)))
		return NULL;
	img_path = DevicePathFromHandle(li->DeviceHandle);
	if (!img_path)
		return NULL;
	if (EFI_ERROR(uefi_call_wrapper(BS->LocateHandleBuffer, 5, ByProtocol, &BlockIoProtocol, NULL, &count, &handles)))
		return NULL;
	for (i = 0; i < count && !found; i++) {
		EFI_BLOCK_IO *bio;
		EFI_DEVICE_PATH *p;
		UINTN n;
		if (EFI_ERROR(uefi_call_wrapper(BS->HandleProtocol, 3, handles[i], &BlockIoProtocol, (void **)&bio)))
			continue;
		if (bio->Media->LogicalPartition || !bio->Media->MediaPresent)
			continue;
		p = DevicePathFromHandle(handles[i]);
		if (!p)
			continue;
		n = path_len(p);
		if (n <= path_len(img_path) && CompareMem(p, img_path, n) == 0)
			found = bio;
	}
	FreePool(handles);
	return found;
}

static EFI_STATUS fail(const CHAR16 *what, EFI_STATUS st)
{
	Print(L"\r\nGGNET-ERROR fw=uefi what=%s status=%r\r\n", what, st);
	for (;;)
		uefi_call_wrapper(BS->Stall, 1, 1000000);
	return st;
}

EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab)
{
	EFI_BLOCK_IO *bio;
	UINT8 *buf;
	UINT32 count, flags;
	CHAR16 id[33];
	UINTN i;
	EFI_STATUS st;

	InitializeLib(image, systab);
	bio = boot_disk(image);
	if (!bio)
		return fail(L"disk", EFI_NOT_FOUND);
	buf = AllocatePool(bio->Media->BlockSize);
	if (!buf)
		return fail(L"memory", EFI_OUT_OF_RESOURCES);
	st = uefi_call_wrapper(bio->ReadBlocks, 5, bio, bio->Media->MediaId, STATE_LBA, bio->Media->BlockSize, buf);
	if (EFI_ERROR(st))
		return fail(L"read", st);
	if (CompareMem(buf, magic, sizeof(magic)) != 0)
		return fail(L"magic", EFI_VOLUME_CORRUPTED);
	for (i = 0; i < 32 && buf[8 + i]; i++)
		id[i] = buf[8 + i];
	id[i] = 0;
	CopyMem(&count, buf + 40, sizeof(count));
	CopyMem(&flags, buf + 44, sizeof(flags));
	if (flags & HANG_UEFI) {
		Print(L"\r\nGGNET-HANG fw=uefi\r\n");
		for (;;)
			uefi_call_wrapper(BS->Stall, 1, 1000000);
	}
	Print(L"\r\nGGNET-BOOT fw=uefi id=%s count=%u\r\n", id, count);
	count++;
	CopyMem(buf + 40, &count, sizeof(count));
	st = uefi_call_wrapper(bio->WriteBlocks, 5, bio, bio->Media->MediaId, STATE_LBA, bio->Media->BlockSize, buf);
	if (!EFI_ERROR(st))
		st = uefi_call_wrapper(bio->FlushBlocks, 1, bio);
	if (EFI_ERROR(st))
		return fail(L"write", st);
	Print(L"GGNET-WROTE fw=uefi count=%u\r\n", count);
	for (;;)
		uefi_call_wrapper(BS->Stall, 1, 1000000);
	return EFI_SUCCESS;
}
