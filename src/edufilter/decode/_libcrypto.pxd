# The parts of OpenSSL's libcrypto (3.0) the QUIC Initial reader uses: fetched algorithms,
# cipher contexts (AES-128-GCM, AES-128-ECB) and digest contexts (SHA-256, for HMAC).

cdef extern from "<openssl/evp.h>" nogil:
    ctypedef struct OSSL_LIB_CTX
    ctypedef struct ENGINE
    ctypedef struct EVP_CIPHER
    ctypedef struct EVP_CIPHER_CTX
    ctypedef struct EVP_MD
    ctypedef struct EVP_MD_CTX

    enum:
        EVP_CTRL_GCM_SET_TAG

    EVP_CIPHER* EVP_CIPHER_fetch(OSSL_LIB_CTX* library, const char* algorithm, const char* properties)
    void EVP_CIPHER_free(EVP_CIPHER* cipher)
    EVP_CIPHER_CTX* EVP_CIPHER_CTX_new()
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX* context)
    int EVP_CIPHER_CTX_set_padding(EVP_CIPHER_CTX* context, int padding)
    int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX* context, int command, int argument, void* pointer)
    int EVP_EncryptInit_ex(EVP_CIPHER_CTX* context, const EVP_CIPHER* cipher, ENGINE* engine,
                           const unsigned char* key, const unsigned char* iv)
    int EVP_EncryptUpdate(EVP_CIPHER_CTX* context, unsigned char* out, int* out_length,
                          const unsigned char* data, int length)
    int EVP_DecryptInit_ex(EVP_CIPHER_CTX* context, const EVP_CIPHER* cipher, ENGINE* engine,
                           const unsigned char* key, const unsigned char* iv)
    int EVP_DecryptUpdate(EVP_CIPHER_CTX* context, unsigned char* out, int* out_length,
                          const unsigned char* data, int length)
    int EVP_DecryptFinal_ex(EVP_CIPHER_CTX* context, unsigned char* out, int* out_length)

    EVP_MD* EVP_MD_fetch(OSSL_LIB_CTX* library, const char* algorithm, const char* properties)
    void EVP_MD_free(EVP_MD* digest)
    EVP_MD_CTX* EVP_MD_CTX_new()
    void EVP_MD_CTX_free(EVP_MD_CTX* context)
    int EVP_DigestInit_ex(EVP_MD_CTX* context, const EVP_MD* digest, ENGINE* engine)
    int EVP_DigestUpdate(EVP_MD_CTX* context, const void* data, size_t length)
    int EVP_DigestFinal_ex(EVP_MD_CTX* context, unsigned char* out, unsigned int* out_length)
