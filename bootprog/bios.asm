; ggnet test boot sector: proves which disk a PC booted and that it can write to it.
;
; The BIOS (or iPXE's sanboot) loads this sector to 0x7c00 with DL = boot drive.  It
; reads the state sector (STATE_LBA).  If the state's flags (u32 at byte 44) have
; HANG_BIOS set, it prints GGNET-HANG fw=bios and idles forever with interrupts on (a
; disk that "hangs" for the boot test's failure scenarios).  Otherwise it prints
;     GGNET-BOOT fw=bios id=<identity> count=<n>
; on COM1, where <n> is the counter it found, stores n+1 back to the same disk, prints
;     GGNET-WROTE fw=bios count=<n+1>
; and halts.  A failure prints GGNET-ERROR fw=bios what=<step> and halts.
; It must fit in 440 bytes: the rest of LBA 0 is the disk signature and the (GPT
; protective) partition table that build.py leaves in place.

%ifndef STATE_LBA
%define STATE_LBA 48
%endif
COM1    equ 0x3f8
HANG_BIOS equ 1                         ; bit in the state's flags (build.py FLAG_HANG)
BUF     equ 0x7e00                      ; the state sector is read here

        bits 16
        org 0x7c00

start:
        cli
        xor ax, ax
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov sp, 0x7c00
        sti
        cld
        mov [drive], dl

        mov ah, 0x42                    ; extended read through the DAP
        call disk
        mov si, what_read
        jc fail
        mov si, BUF
        mov di, magic
        mov cx, 8
        repe cmpsb
        mov si, what_magic
        jne fail
        test byte [BUF + 44], HANG_BIOS
        jnz hang

        mov si, msg_boot
        call puts
        mov si, msg_id
        call puts
        mov si, BUF + 8                 ; identity: up to 32 bytes, NUL padded
        mov cx, 32
.id:    lodsb
        test al, al
        jz .idend
        call putc
        loop .id
.idend: mov si, msg_count
        call puts
        mov eax, [BUF + 40]
        call putdec
        call crlf

        inc dword [BUF + 40]
        mov ah, 0x43                    ; extended write, no verify
        xor al, al
        call disk
        mov si, what_write
        jc fail
        mov si, msg_wrote
        call puts
        mov eax, [BUF + 40]
        call putdec
        call crlf
        jmp halt

fail:   push si
        mov si, msg_error
        call puts
        pop si
        call puts
        call crlf
halt:   cli
        hlt
        jmp halt

hang:   mov si, msg_hang
        call puts
.idle:  sti                             ; timer interrupts keep running: a live hang
        hlt
        jmp .idle

; AH = 0x42 or 0x43 (AL = 0): transfer the state sector; CF set on error.
disk:   mov si, dap
        mov dl, [drive]
        int 0x13
        ret

; Print the unsigned 32-bit number in EAX in decimal.
putdec: mov ebx, 10
        xor cx, cx
.div:   xor edx, edx
        div ebx
        push dx
        inc cx
        test eax, eax
        jnz .div
.out:   pop ax
        add al, '0'
        call putc
        loop .out
        ret

crlf:   mov al, 13
        call putc
        mov al, 10
        ; fall through
; Write AL to COM1 once its transmitter is empty.  Firmware already set the UART up.
putc:   push dx
        push ax
        mov dx, COM1 + 5
.wait:  in al, dx
        test al, 0x20
        jz .wait
        pop ax
        mov dx, COM1
        out dx, al
        pop dx
        ret

; Print the NUL-terminated string at SI.
puts:   lodsb
        test al, al
        jz .done
        call putc
        jmp puts
.done:  ret

dap:    db 0x10, 0                      ; size of the packet, reserved
        dw 1                            ; sectors
        dw BUF, 0                       ; buffer offset, segment
        dq STATE_LBA
drive:  db 0x80
magic:  db "GGNETST1"
msg_boot:   db 13, 10, "GGNET-BOOT fw=bios", 0
msg_id:     db " id=", 0
msg_count:  db " count=", 0
msg_wrote:  db "GGNET-WROTE fw=bios count=", 0
msg_error:  db 13, 10, "GGNET-ERROR fw=bios what=", 0
msg_hang:   db 13, 10, "GGNET-HANG fw=bios", 13, 10, 0
what_read:  db "read", 0
what_magic: db "magic", 0
what_write: db "write", 0

%if ($ - $$) > 440
%error "boot sector code is larger than 440 bytes"
%endif
        times 440 - ($ - $$) db 0
